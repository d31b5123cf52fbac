"""How the C heap gives memory back, so a conversion's peak is what it holds, not what it freed.

NumPy and ONNX Runtime allocate large arrays with ``malloc``. glibc serves a block below its mmap
threshold from the heap and keeps it when freed, and the threshold grows with every large block
freed (up to 32 MB): once a probe's runs have freed their activations, the temporaries of every
later rounding stay in the heap. On the VGG-19 shape, 390 MB of the probe's 710 MB resident set
after its float run was such free memory, and rounding its 411 MB layer left 320 MB more
(benchmarks/memory.py). ``give_back`` after each rounding, trial and (on a model over the
probe's ``WHOLE_MODEL_BYTES``) segment run returns it; each call costs the pages' faults again
later. (A fixed 1 MB mmap threshold instead returned memory as it was freed, but made the light
ResNet-50's conversion 1.6x slower, 120 s against 74 s for ``dfmpc-onnx convert`` of onnx's
``backend/test/data/light/light_resnet50.onnx``: ONNX Runtime's buffers were then mapped and
zeroed on every run.)
Outside glibc it does nothing.
"""

from __future__ import annotations

import ctypes

_LIBC: ctypes.CDLL | None | bool = None


def give_back() -> None:
    """Return the heap's free pages to the system now (``malloc_trim``: milliseconds)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
