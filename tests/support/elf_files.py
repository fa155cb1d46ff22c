"""A minimal ELF writer for tests: a shared object whose dynamic section names the given DT_NEEDED libraries.

Only what a dynamic-section reader looks at is written (ELF header, .dynstr, .dynamic, section headers), in
either class and byte order, so the reader's 32-bit and big-endian paths are tested without cross compilers.
`readelf -d` reads these files the same way (tests/test_elf.py checks it).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path


def elf_bytes(needed: Sequence[str], is64: bool = True, little: bool = True, program_headers: bool = True) -> bytes:
    """A shared object as the loader sees it: one PT_LOAD segment mapping the file at address 0x10000 (so that
    addresses and offsets differ, as in real files) and PT_DYNAMIC; plus the sections readelf -S shows."""
    end = "<" if little else ">"
    base = 0x10000
    strtab = b"\0"
    offsets = []
    for name in needed:
        offsets.append(len(strtab))
        strtab += name.encode() + b"\0"
    shstr = b"\0.dynstr\0.dynamic\0.shstrtab\0"
    dyn_fmt = end + ("qQ" if is64 else "iI")
    ehsize = 64 if is64 else 52
    phentsize = 56 if is64 else 32
    phnum = 2 if program_headers else 0
    shentsize = 64 if is64 else 40
    off_str = ehsize + phentsize * phnum
    dynamic = b"".join(struct.pack(dyn_fmt, 1, off) for off in offsets)
    dynamic += struct.pack(dyn_fmt, 5, base + off_str) + struct.pack(dyn_fmt, 10, len(strtab))
    dynamic += struct.pack(dyn_fmt, 0, 0)
    off_dyn = off_str + len(strtab)
    off_dyn += (-off_dyn) % 8
    off_shstr = off_dyn + len(dynamic)
    off_sh = off_shstr + len(shstr)
    off_sh += (-off_sh) % 8
    shdr = end + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
    sections = [
        struct.pack(shdr, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        struct.pack(shdr, 1, 3, 2, base + off_str, off_str, len(strtab), 0, 0, 1, 0),  # .dynstr (SHT_STRTAB)
        struct.pack(shdr, 9, 6, 3, base + off_dyn, off_dyn, len(dynamic), 1, 0, 8, struct.calcsize(dyn_fmt)),
        struct.pack(shdr, 18, 3, 0, 0, off_shstr, len(shstr), 0, 0, 1, 0),  # .shstrtab
    ]
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if little else 2, 1, 0]) + b"\0" * 8
    machine = 62 if is64 else 3  # x86-64 / i386
    total = off_sh + len(sections) * shentsize
    phoff = ehsize if program_headers else 0
    if is64:
        header = ident + struct.pack(end + "HHIQQQIHHHHHH", 3, machine, 1, 0, phoff, off_sh, 0, ehsize, phentsize,
                                     phnum, shentsize, len(sections), 3)
        phdr = end + "IIQQQQQQ"  # type, flags, offset, vaddr, paddr, filesz, memsz, align
        phdrs = (struct.pack(phdr, 1, 6, 0, base, base, total, total, 0x1000) +
                 struct.pack(phdr, 2, 6, off_dyn, base + off_dyn, base + off_dyn, len(dynamic), len(dynamic), 8))
    else:
        header = ident + struct.pack(end + "HHIIIIIHHHHHH", 3, machine, 1, 0, phoff, off_sh, 0, ehsize, phentsize,
                                     phnum, shentsize, len(sections), 3)
        phdr = end + "IIIIIIII"  # type, offset, vaddr, paddr, filesz, memsz, flags, align
        phdrs = (struct.pack(phdr, 1, 0, base, base, total, total, 6, 0x1000) +
                 struct.pack(phdr, 2, off_dyn, base + off_dyn, base + off_dyn, len(dynamic), len(dynamic), 6, 4))
    out = bytearray(header + (phdrs if program_headers else b""))
    for offset, blob in ((off_str, strtab), (off_dyn, dynamic), (off_shstr, shstr), (off_sh, b"".join(sections))):
        out += b"\0" * (offset - len(out))
        out += blob
    return bytes(out)


def write_elf(path: Path, needed: Sequence[str], is64: bool = True, little: bool = True,
              program_headers: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(elf_bytes(needed, is64, little, program_headers))
    return path
