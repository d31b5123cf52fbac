"""How the C heap gives memory back, so a conversion's peak is what it holds, not what it freed.

NumPy and ONNX Runtime allocate large arrays with ``malloc``. glibc serves a block below its
mmap threshold from the heap and keeps it when freed; the threshold also grows with every large
block freed (up to 32 MB), so a conversion that makes and drops hundreds of weight-sized
temporaries keeps most of them: on the VGG-19 shape, 390 MB of the probe's 710 MB resident set
after its float run, and a trial of its 411 MB layer peaked 300 MB higher than it held
(benchmarks/memory.py). Outside glibc both calls do nothing.
"""

from __future__ import annotations

import ctypes

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_LIBC: ctypes.CDLL | None | bool = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def map_large_blocks(threshold: int = 1 << 20) -> None:
    """Have every allocation of ``threshold`` bytes or more mapped on its own and unmapped when
    freed (a fixed mmap threshold: glibc stops raising it). For the rest of the process."""
    libc = _libc()
    if libc:
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)


def give_back() -> None:
    """Return the heap's free pages to the system now (``malloc_trim``)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)
