"""The only code that touches NVML, psutil, free space and installed package versions."""
