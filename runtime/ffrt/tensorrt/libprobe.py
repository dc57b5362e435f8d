"""Read the libraries an ELF shared object links (its DT_NEEDED entries), and find which
file the dynamic loader gave this process for a library name. Linux only; stdlib only.

Used to tell which TensorRT major ONNX Runtime's TensorRT provider links (libnvinfer.so.10
for onnxruntime-gpu 1.31) and which file of that name this process loads, so the ORT
TensorRT cache key and ``ffrt doctor`` report the TensorRT that actually runs, not the
version of the Python ``tensorrt`` package (which can be another major).
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

DT_NEEDED, DT_STRTAB = 1, 5
PT_DYNAMIC, PT_LOAD = 2, 1


def needed(path: str | os.PathLike) -> list[str]:
    """DT_NEEDED entries of an ELF file (empty for a non-ELF file)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        return []
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        e_phoff, = struct.unpack_from(end + "Q", data, 0x20)
        e_phentsize, e_phnum = struct.unpack_from(end + "HH", data, 0x36)
    else:
        e_phoff, = struct.unpack_from(end + "I", data, 0x1C)
        e_phentsize, e_phnum = struct.unpack_from(end + "HH", data, 0x2A)
    loads, dynamic = [], None
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        if is64:
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(end + "IIQQQQ", data, off)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(end + "IIIII", data, off)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []
    fmt, size = (end + "qQ", 16) if is64 else (end + "iI", 8)
    entries = []
    for off in range(dynamic[0], dynamic[0] + dynamic[1], size):
        tag, val = struct.unpack_from(fmt, data, off)
        if tag == 0:
            break
        entries.append((tag, val))
    strtab_vaddr = next((v for t, v in entries if t == DT_STRTAB), None)
    if strtab_vaddr is None:
        return []
    strtab = next((strtab_vaddr - va + fo for va, fo, sz in loads if va <= strtab_vaddr < va + sz), strtab_vaddr)
    out = []
    for tag, val in entries:
        if tag == DT_NEEDED:
            start = strtab + val
            out.append(data[start:data.index(b"\0", start)].decode())
    return out


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def loaded_path(soname: str, symbol: str = "getInferLibVersion") -> str | None:
    """The file the dynamic loader gives this process for ``soname`` (dladdr of one of its
    symbols: the path as it was opened), or None when it does not load."""
    lib = load(soname)
    if lib is None:
        return None
    try:
        fn = getattr(lib, symbol)
        libc = ctypes.CDLL(None)
        dladdr = libc.dladdr
    except (AttributeError, OSError):
        return None
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    info = _DlInfo()
    if not dladdr(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(info.dli_fname.decode(errors="replace"))


def load(soname: str) -> ctypes.CDLL | None:
    """dlopen ``soname`` the way a NEEDED entry of an already-loaded library resolves it
    (an object with that soname already in the process wins, then the loader's search)."""
    try:
        return ctypes.CDLL(soname)
    except OSError:
        return None
