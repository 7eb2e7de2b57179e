"""Let glibc keep freed memory for reuse, for processes that move large messages.

glibc gives memory back to the kernel as soon as 128 KiB lie free at the top of the heap. A process that
sends and receives 64 KiB messages frees that much many times a second, so it keeps shrinking its heap and
faulting fresh pages into it again: in ``python -m bench.heap`` that is about 22 page faults per call, and a
third of the client's CPU time. :func:`tune_malloc` raises glibc's
thresholds so the heap keeps what it freed. It changes the whole process, so amphora never calls it behind a
program's back: a program opts in, and ``amphora serve`` does it for the process it owns.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

TRIM_THRESHOLD = 32 * 1024 * 1024
"""Bytes that may lie free at the top of the heap before glibc gives them back (glibc's default: 128 KiB,
rising with the largest block it mapped and freed)."""
MMAP_THRESHOLD = 4 * 1024 * 1024
"""Blocks from this size on get memory of their own from the kernel, given back when freed; smaller ones
come from the heap. A large body is a block of its own (its encoding buffer is kept), so the default 128 KiB
would map and unmap one for every large message."""

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MALLOC_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def tune_malloc(trim_threshold: int = TRIM_THRESHOLD, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Set glibc's trim and mmap thresholds for this process; True if it did.

    It does nothing (False) where the C library has no ``mallopt`` (macOS) or ignores it (musl), and when
    the environment already tunes glibc's malloc (``MALLOC_*_`` variables, ``glibc.malloc`` tunables): an
    explicit choice wins. The cost: up to ``trim_threshold`` bytes of freed memory stay in the process.
    """
    if _tuned_by_environment():
        log.debug("malloc left as the environment sets it")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    tuned = bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    if tuned:
        log.debug("malloc keeps up to %d free bytes; blocks from %d bytes are mapped", trim_threshold, mmap_threshold)
    return tuned


def _tuned_by_environment() -> bool:
    return any(name in os.environ for name in _MALLOC_ENVIRONMENT) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    )
