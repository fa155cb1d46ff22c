"""The pure-Python ELF reader: DT_NEEDED of real linker output and of hand-made files, checked against readelf."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from bootstrap.probes import elf
from tests.support.e2e import missing
from tests.support.elf_files import elf_bytes, write_elf


def readelf_needed(path: Path) -> tuple[str, ...]:
    if shutil.which("readelf") is None:
        missing("readelf (Debian package binutils) is needed to cross-check the ELF reader")
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return tuple(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


@pytest.mark.parametrize("is64", [True, False])
@pytest.mark.parametrize("little", [True, False])
def test_needed_names_come_back_in_order_in_every_class_and_byte_order(tmp_path, is64, little):
    names = ["libtorch.so", "libcudart.so.12", "libc.so.6"]
    path = write_elf(tmp_path / "x.so", names, is64=is64, little=little)
    assert elf.needed(path) == tuple(names)


def test_a_file_without_program_headers_is_read_from_its_sections(tmp_path):
    path = write_elf(tmp_path / "x.so", ["libcudart.so.12"], program_headers=False)
    assert elf.needed(path) == ("libcudart.so.12",)


@pytest.mark.parametrize("is64", [True, False])
def test_readelf_reads_the_hand_made_files_the_same_way(tmp_path, is64):
    path = write_elf(tmp_path / "x.so", ["libcudart.so.13", "libstdc++.so.6"], is64=is64)
    assert readelf_needed(path) == elf.needed(path) == ("libcudart.so.13", "libstdc++.so.6")


def test_real_linker_output_that_links_a_cuda_runtime(tmp_path):
    """What vLLM's extensions look like: a shared object linked against libcudart.so.12 by the real linker."""
    if shutil.which("gcc") is None:
        missing("gcc is needed to link a real shared object for the ELF reader test")
    (tmp_path / "cudart.c").write_text("int cudaGetDeviceCount(int *n) { *n = 0; return 0; }\n")
    (tmp_path / "ext.c").write_text("int cudaGetDeviceCount(int *n);\nint probe(void) { int n; "
                                    "return cudaGetDeviceCount(&n); }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcudart.so.12", "-o", str(tmp_path / "libcudart.so.12"),
                    str(tmp_path / "cudart.c")], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "_C.abi3.so"), str(tmp_path / "ext.c"),
                    str(tmp_path / "libcudart.so.12")], check=True)
    ext = tmp_path / "_C.abi3.so"
    assert "libcudart.so.12" in elf.needed(ext)
    assert elf.needed(ext) == readelf_needed(ext)
    assert elf.linked_cudart([ext, tmp_path / "libcudart.so.12"]) == {str(ext): (12,)}


def test_every_extension_module_of_this_python_reads_as_readelf_reads_it():
    files = sorted(glob.glob(str(Path(sysconfig.get_paths()["platstdlib"]) / "lib-dynload" / "*.so")))[:25]
    files += ["/bin/ls", "/bin/sh"]
    assert files
    for f in files:
        real = Path(f).resolve()
        assert elf.needed(real) == readelf_needed(real), f


def test_a_file_that_is_not_elf_is_refused(tmp_path):
    (tmp_path / "script.so").write_text("#!/bin/sh\n")
    with pytest.raises(elf.NotElf):
        elf.needed(tmp_path / "script.so")


def test_a_truncated_file_is_refused(tmp_path):
    (tmp_path / "cut.so").write_bytes(elf_bytes(["libcudart.so.13"])[:100])
    with pytest.raises(elf.NotElf, match="truncated"):
        elf.needed(tmp_path / "cut.so")


def test_linked_cudart_skips_what_it_cannot_read_and_what_links_no_runtime(tmp_path):
    good = write_elf(tmp_path / "a.so", ["libcudart.so.13"])
    plain = write_elf(tmp_path / "b.so", ["libc.so.6"])
    (tmp_path / "c.so").write_text("not elf")
    assert elf.linked_cudart([good, plain, tmp_path / "c.so", tmp_path / "missing.so"]) == {str(good): (13,)}


def test_cudart_majors_only_count_the_versioned_runtime():
    assert elf.cudart_majors(["libcudart.so.12", "libcudart.so.13", "libcudart_static.a", "libcudart.so"]) == (12, 13)
