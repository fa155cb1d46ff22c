"""The one byte formatter and the one CUDA version formatter (bootstrap.core.units), in every style vboot uses."""

from __future__ import annotations

import pytest

from bootstrap.core.units import cuda_str, format_bytes

GiB = 1024**3


@pytest.mark.parametrize("n, shown", [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (12 * GiB, "12.0 GiB"),
    (1024**5 * 3, "3.0 PiB"), (1024**6, "1024.0 PiB"), (-2048, "-2.0 KiB"),
])
def test_the_human_views_binary_units(n, shown):
    assert format_bytes(n) == shown


@pytest.mark.parametrize("n, shown", [
    (512, "512 B"), (10_100, "10.1 kB"), (5_000, "5.0 kB"), (999_999_999, "1000.0 MB"), (2_000_000_000, "2.0 GB"),
    (3_100_000_000, "3.1 GB"), (1_500_000_000_000, "1.5 TB"),
])
def test_decimal_units_for_download_sizes(n, shown):
    assert format_bytes(n, binary=False) == shown


@pytest.mark.parametrize("n, shown", [(None, "?"), (0, "0.0 GiB"), (GiB // 2, "0.5 GiB"), (80 * GiB, "80.0 GiB")])
def test_a_fixed_unit_as_the_checks_write_it(n, shown):
    assert format_bytes(n, unit="GiB", missing="?") == shown


@pytest.mark.parametrize("value, shown", [(13000, "13.0"), (12080, "12.8"), (12090, "12.9"), (None, "unknown"),
                                          (0, "unknown")])
def test_cuda_versions_in_nvmls_encoding(value, shown):
    assert cuda_str(value) == shown
