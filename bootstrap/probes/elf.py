"""Which shared libraries an ELF file asks the dynamic loader for (its ``DT_NEEDED`` entries), in pure Python.

`vboot setup` and `vboot doctor` use it to learn which CUDA runtime vLLM's compiled extensions link
(``libcudart.so.12`` or ``libcudart.so.13``) without importing torch or vLLM (seconds, and the very import that
fails when the build does not fit the driver) and without binutils, which slim images and many GPU boxes lack.
Shell equivalent: ``readelf -d FILE | grep NEEDED``.

Only what that needs is read: the ELF header, the program headers, the dynamic entries and the string table;
a 300 MB extension costs four small reads. 32/64-bit and both byte orders are handled.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from bootstrap.core.errors import NotElf

PT_LOAD = 1
PT_DYNAMIC = 2
SHT_DYNAMIC = 6
DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_STRSZ = 10
_CUDART = re.compile(r"^libcudart\.so\.(\d+)$")


def _read(fh: BinaryIO, offset: int, size: int) -> bytes:
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise NotElf(f"truncated: wanted {size} bytes at offset {offset}, got {len(data)}")
    return data


def needed_from(fh: BinaryIO) -> tuple[str, ...]:
    """``DT_NEEDED`` names, in order, from a binary file object positioned anywhere.

    As the dynamic loader (and ``readelf -d``) does: the ``PT_DYNAMIC`` program header locates the dynamic
    entries, and ``DT_STRTAB``, an address, is mapped to a file offset through the ``PT_LOAD`` segments. A file
    without program headers falls back to its ``SHT_DYNAMIC`` section and the string table it links to.
    """
    ident = _read(fh, 0, 16)
    if ident[:4] != b"\x7fELF":
        raise NotElf("no ELF magic")
    if ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise NotElf(f"unknown ELF class {ident[4]} or data encoding {ident[5]}")
    is64 = ident[4] == 2
    end = "<" if ident[5] == 1 else ">"
    if is64:  # Elf64_Ehdr: e_phoff at 0x20, e_shoff at 0x28, e_phentsize.. at 0x36
        phoff, shoff = struct.unpack(end + "QQ", _read(fh, 0x20, 16))
        phentsize, phnum, shentsize, shnum = struct.unpack(end + "HHHH", _read(fh, 0x36, 8))
        # Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz, memsz, align
        phdr, ph_fields = end + "IIQQQQQQ", (0, 2, 3, 5)
        shdr, dyn = end + "IIQQQQIIQQ", end + "qQ"
    else:  # Elf32_Ehdr: e_phoff at 0x1C, e_shoff at 0x20, e_phentsize.. at 0x2A
        phoff, shoff = struct.unpack(end + "II", _read(fh, 0x1C, 8))
        phentsize, phnum, shentsize, shnum = struct.unpack(end + "HHHH", _read(fh, 0x2A, 8))
        # Elf32_Phdr: type, offset, vaddr, paddr, filesz, memsz, flags, align
        phdr, ph_fields = end + "IIIIIIII", (0, 1, 2, 4)
        shdr, dyn = end + "IIIIIIIIII", end + "iI"
    entry = struct.calcsize(dyn)
    if phoff and phnum:
        if phentsize < struct.calcsize(phdr):
            raise NotElf(f"program header entries of {phentsize} bytes are too small")
        table = _read(fh, phoff, phentsize * phnum)
        segments = []
        for i in range(phnum):
            raw = struct.unpack_from(phdr, table, i * phentsize)
            segments.append(tuple(raw[k] for k in ph_fields))  # (type, offset, vaddr, filesz)
        dynamic = [s for s in segments if s[0] == PT_DYNAMIC]
        if not dynamic:
            return ()  # linked statically: it needs nothing
        _, offset, _, size = dynamic[0]
        entries = _entries(_read(fh, offset, size - size % entry), dyn, entry)
        strtab = next((v for t, v in entries if t == DT_STRTAB), None)
        strsz = next((v for t, v in entries if t == DT_STRSZ), None)
        if strtab is None or strsz is None:
            raise NotElf("the dynamic section has no string table")
        where = next((off + strtab - vaddr for t, off, vaddr, filesz in segments
                      if t == PT_LOAD and vaddr <= strtab < vaddr + filesz), None)
        if where is None:
            raise NotElf(f"the string table's address {strtab:#x} is in no loaded segment")
        return _names(entries, _read(fh, where, strsz))
    if not shoff or not shnum:
        return ()
    if shentsize < struct.calcsize(shdr):
        raise NotElf(f"section header entries of {shentsize} bytes are too small")
    table = _read(fh, shoff, shentsize * shnum)
    sections = [struct.unpack_from(shdr, table, i * shentsize) for i in range(shnum)]
    for sec in sections:  # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
        if sec[1] == SHT_DYNAMIC:
            if not 0 <= sec[6] < len(sections):
                raise NotElf(f"the dynamic section links to string table {sec[6]}, which does not exist")
            strings = sections[sec[6]]
            entries = _entries(_read(fh, sec[4], sec[5] - sec[5] % entry), dyn, entry)
            return _names(entries, _read(fh, strings[4], strings[5]))
    return ()


def _entries(body: bytes, fmt: str, size: int) -> list[tuple[int, int]]:
    out = []
    for i in range(0, len(body), size):
        tag, value = struct.unpack_from(fmt, body, i)
        if tag == DT_NULL:
            break
        out.append((tag, value))
    return out


def _names(entries: list[tuple[int, int]], strings: bytes) -> tuple[str, ...]:
    names = []
    for tag, value in entries:
        if tag == DT_NEEDED:
            if value >= len(strings):
                raise NotElf(f"a DT_NEEDED name at {value} lies outside the string table")
            stop = strings.find(b"\0", value)
            names.append(strings[value:stop if stop >= 0 else None].decode("utf-8", "replace"))
    return tuple(names)


def needed(path: Path) -> tuple[str, ...]:
    """``DT_NEEDED`` of the ELF file at ``path`` (``readelf -d PATH``). Raises OSError or :class:`NotElf`."""
    with open(path, "rb") as fh:
        return needed_from(fh)


def cudart_majors(names: Iterable[str]) -> tuple[int, ...]:
    """The CUDA runtime majors among ``DT_NEEDED`` names: ``libcudart.so.13`` -> 13."""
    return tuple(sorted({int(m.group(1)) for n in names if (m := _CUDART.match(n))}))


def linked_cudart(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    """For each ELF file that links a CUDA runtime, the majors it links; unreadable or non-ELF files are left
    out (a half-written file is the install's problem, reported by the import that follows)."""
    out: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            majors = cudart_majors(needed(path))
        except (OSError, NotElf):
            continue
        if majors:
            out[str(path)] = majors
    return out


def package_cudart(package_dir: Path | None, recursive: bool = True) -> dict[str, tuple[int, ...]]:
    """:func:`linked_cudart` of the ``*.so`` files of an installed package (``SITE/vllm``); {} without one.

    ``recursive=False`` reads only the package's own folder, where vLLM keeps its main extensions (``_C``,
    ``_moe_C``, ``cumem_allocator``): ~1 ms, where walking vllm's ~6,600 files costs ~50 ms (doctor's budget)."""
    if package_dir is None or not package_dir.is_dir():
        return {}
    files = package_dir.rglob("*.so") if recursive else package_dir.glob("*.so")
    return linked_cudart(sorted(files))
