"""What the NVML probe (bootstrap.probes.nvml) and the code that judges its answers (doctor's checks, `vboot top`)
share about a failure to read the GPUs: its kind. The remedies live where the checks are (bootstrap.core.checks)."""

from __future__ import annotations

import enum


class NvmlErrorKind(str, enum.Enum):
    """Why NVML could not be read at all (a whole-snapshot failure; one GPU failing is reported on that GPU)."""

    LIBRARY_NOT_FOUND = "library_not_found"  # libnvidia-ml.so (or pynvml itself) is missing: no driver installed
    DRIVER_NOT_LOADED = "driver_not_loaded"  # installed but the kernel module is not loaded
    NO_PERMISSION = "no_permission"  # /dev/nvidia* not accessible to this user
    INIT_FAILED = "init_failed"  # any other failure of nvmlInit or of counting the GPUs

    @property
    def fatal(self) -> bool:
        """Nothing changes until the machine does (a driver installed or loaded): asking again is pointless."""
        return self in (NvmlErrorKind.LIBRARY_NOT_FOUND, NvmlErrorKind.DRIVER_NOT_LOADED)
