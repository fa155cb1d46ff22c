"""Record what nvitop-exporter serves, without a GPU: its own PrometheusExporter fed by two fake H100s.

This machine has no NVIDIA driver, so nvitop-exporter cannot start here. The exposition in
tests/data/nvitop-exporter-1.7.2.metrics.txt (the GPU rules' promtool tests and the dashboard test read it) was
made by running nvitop_exporter.exporter.PrometheusExporter itself (its metric names, units and labels, exactly)
on two stand-in devices whose values are those of an H100 80GB HBM3 serving vLLM at --gpu-memory-utilization
0.9 (GPU 0) and an idle one (GPU 1). Host series (host_*: this machine's disks and NICs) are left out.
`benchmarks/gpu/exporter_gpu.sh` reads the real thing on a GPU machine.

    python -m venv /tmp/nv && /tmp/nv/bin/pip install nvitop-exporter==1.7.2
    /tmp/nv/bin/python benchmarks/gpu/record_nvitop_exposition.py > tests/data/nvitop-exporter-1.7.2.metrics.txt
"""

from __future__ import annotations

import contextlib
import sys
from collections import namedtuple

from nvitop import Device, PhysicalDevice
from nvitop_exporter import __version__
from nvitop_exporter.exporter import PrometheusExporter
from prometheus_client import CollectorRegistry, generate_latest

MiB = 1024 * 1024
Clocks = namedtuple("Clocks", "graphics sm memory video")


class FakeH100(PhysicalDevice):
    """Answers the queries PrometheusExporter.update_device makes, with fixed values."""

    def __new__(cls, *fake: int) -> FakeH100:  # Device.__new__ would look the GPU up through NVML
        return object.__new__(cls)

    def __init__(self, index: int, used_mib: int, util: int, power_mw: int, temp: int) -> None:  # no NVML handle
        self._fake = (index, used_mib, util, power_mw, temp)

    index = property(lambda self: self._fake[0])
    def name(self): return "NVIDIA H100 80GB HBM3"
    def uuid(self): return f"GPU-3b1a7e52-9c0d-4f6e-8a21-5d0c6f1e90a{self._fake[0]}"
    def oneshot(self): return contextlib.nullcontext()
    def gpu_utilization(self): return self._fake[2]
    def memory_utilization(self): return max(0, self._fake[2] - 40)
    def encoder_utilization(self): return 0
    def decoder_utilization(self): return 0
    def memory_total(self): return 81559 * MiB
    def memory_used(self): return self._fake[1] * MiB
    def memory_free(self): return (81559 - self._fake[1]) * MiB
    def memory_percent(self): return round(100 * self._fake[1] / 81559, 1)
    def clock_infos(self): return Clocks(1980, 1980, 2619, 1545)
    def power_usage(self): return self._fake[3]
    def power_limit(self): return 700_000
    def temperature(self): return self._fake[4]
    def fan_speed(self): return 0
    def pcie_tx_throughput(self): return 2048
    def pcie_rx_throughput(self): return 4096
    def nvlink_total_tx_throughput(self): return 0
    def nvlink_total_rx_throughput(self): return 0
    def nvlink_mean_tx_throughput(self): return 0
    def nvlink_mean_rx_throughput(self): return 0
    def nvlink_tx_throughput(self): return []
    def nvlink_rx_throughput(self): return []
    def processes(self): return {}
    def __hash__(self): return hash(self._fake[0])
    def __eq__(self, other): return self is other


def main() -> None:
    Device.count = staticmethod(lambda: 2)
    Device.driver_version = staticmethod(lambda: "580.159.04")
    Device.cuda_driver_version = staticmethod(lambda: "13.0")
    devices = [FakeH100(0, 73_437, 87, 512_340, 61), FakeH100(1, 4, 0, 69_120, 33)]
    registry = CollectorRegistry()
    exporter = PrometheusExporter(devices, hostname="gpu-box", registry=registry, interval=1.0)
    for device in devices:
        exporter.update_device(device)
    text = generate_latest(registry).decode()
    out = [f"# nvitop-exporter {__version__}: PrometheusExporter on two stand-in H100s "
           "(benchmarks/gpu/record_nvitop_exposition.py); host_* series left out"]
    skip = False
    for line in text.splitlines():
        if line.startswith("# HELP "):
            skip = line.split()[2].startswith("host_")
        if not skip:
            out.append(line)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
