"""The production wiring of a server's lifecycle (bootstrap/cli/wiring.py), with a fake NVML."""

from __future__ import annotations

from tests.support import fake_nvml


def test_the_supervisor_initialises_nvml_once_across_its_gpu_reads(monkeypatch):
    """The settle wait after an exit reads the GPU's memory every second; NVML is initialised by the first read
    and kept (nvitop's _lazy_init), not initialised for each read."""
    from bootstrap.cli.wiring import lifecycle_collaborators

    fake = fake_nvml.one_h100()
    monkeypatch.setattr("bootstrap.probes.nvml._load_default", lambda: fake)
    collab = lifecycle_collaborators("gpu")
    used = [collab.gpu_used() for _ in range(4)]
    assert used == [fake.gpus[0].used] * 4
    assert isinstance(collab.gpu_holders(), list)
    assert fake.inits == 1


def test_a_cpu_server_reads_no_gpu_at_all(monkeypatch):
    from bootstrap.cli.wiring import lifecycle_collaborators

    fake = fake_nvml.one_h100()
    monkeypatch.setattr("bootstrap.probes.nvml._load_default", lambda: fake)
    collab = lifecycle_collaborators("cpu")
    assert collab.gpu_used is None and collab.gpu_holders is None
    assert fake.inits == 0
