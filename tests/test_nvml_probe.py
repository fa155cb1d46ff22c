"""The NVML probe through a fake NVML playing named scenarios."""

from __future__ import annotations

from bootstrap.core.gpu import NvmlErrorKind
from bootstrap.probes import nvml
from tests.support import fake_nvml

GiB = fake_nvml.GiB


def test_library_missing_is_data_not_an_exception():
    s = nvml.snapshot(fake_nvml.no_library())
    assert not s.ok and s.error_kind is NvmlErrorKind.LIBRARY_NOT_FOUND and s.error_kind.fatal


def test_driver_not_loaded_is_classified():
    s = nvml.snapshot(fake_nvml.driver_not_loaded())
    assert not s.ok and s.error_kind is NvmlErrorKind.DRIVER_NOT_LOADED


def test_other_init_failures_are_classified_and_not_fatal():
    for code, kind in ((4, NvmlErrorKind.NO_PERMISSION), (999, NvmlErrorKind.INIT_FAILED)):
        s = nvml.snapshot(fake_nvml.FakeNvml(init_error=code))
        assert s.error_kind is kind and not kind.fatal


def test_the_error_kind_is_its_name_in_json():
    from bootstrap.core.envelope import to_jsonable

    assert to_jsonable(nvml.snapshot(fake_nvml.no_library()))["error_kind"] == "library_not_found"


def test_a_session_initialises_nvml_once_for_many_reads_and_shuts_it_down_once():
    fake = fake_nvml.one_h100()
    session = nvml.NvmlSession(fake)
    snaps = [session.snapshot(with_processes=False) for _ in range(5)]
    assert all(s.ok for s in snaps) and fake.inits == 1 and fake.shutdowns == 0
    session.close()
    session.close()
    assert fake.shutdowns == 1


def test_a_session_remembers_a_fatal_failure_and_retries_another():
    missing = fake_nvml.driver_not_loaded()
    session = nvml.NvmlSession(missing)
    assert [session.snapshot().error_kind for _ in range(3)] == [NvmlErrorKind.DRIVER_NOT_LOADED] * 3
    assert missing.inits == 1
    flaky = fake_nvml.FakeNvml(init_error=999)
    session = nvml.NvmlSession(flaky)
    assert not session.snapshot().ok
    flaky.init_error = None  # the next read tries again, and gets through
    assert session.snapshot().ok and flaky.inits == 2
    session.close()
    assert flaky.shutdowns == 1


def test_no_gpu_is_ok_with_empty_list():
    s = nvml.snapshot(fake_nvml.no_gpu())
    assert s.ok and s.gpus == ()


def test_one_h100_reports_memory_in_bytes_capability_and_driver():
    fake = fake_nvml.one_h100(used=10 * GiB)
    s = nvml.snapshot(fake)
    assert s.driver_version == "580.159.04" and s.cuda_driver_version == 13000 and s.cuda_version_str == "13.0"
    g = s.gpus[0]
    assert g.memory_total_bytes == 80 * GiB and g.memory_used_bytes == 10 * GiB and g.memory_free_bytes == 70 * GiB
    assert g.compute_capability == (9, 0) and g.mig_mode is False
    assert g.power_w == 123.456 and g.temperature_c == 41
    assert fake.shutdowns == 1


def test_one_lost_gpu_does_not_hide_the_other():
    s = nvml.snapshot(fake_nvml.two_gpus_one_lost())
    assert s.ok
    assert s.gpus[0].error is None and s.gpus[0].memory_total_bytes == 80 * GiB
    assert s.gpus[1].error and "lost" in s.gpus[1].error


def test_unsupported_fields_become_none():
    g = nvml.snapshot(fake_nvml.field_not_supported()).gpus[0]
    assert g.error is None
    assert g.temperature_c is None and g.power_w is None and g.mig_mode is None and g.processes == ()
    assert g.memory_free_bytes is not None


def test_process_holding_memory_is_listed_with_bytes():
    g = nvml.snapshot(fake_nvml.process_holding_memory(pid=4242, held=70 * GiB)).gpus[0]
    assert [(p.pid, p.used_bytes) for p in g.processes] == [(4242, 70 * GiB)]


def test_not_available_process_memory_is_none():
    fake = fake_nvml.FakeNvml(gpus=[fake_nvml.FakeGpu(processes=[(7, None), (8, 2**64 - 1)])])
    procs = nvml.snapshot(fake).gpus[0].processes
    assert [p.used_bytes for p in procs] == [None, None]
