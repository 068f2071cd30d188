"""Fixed-size slots of memory shared between a process and its workers, with no name anywhere.

:class:`SlotRing` is ``n_slots`` x ``slot_bytes`` bytes of one anonymous shared file: ``memfd_create`` on Linux,
elsewhere a temporary file unlinked as soon as it is created. It has no name in ``/dev/shm`` or anywhere else, so
nothing is left behind whatever happens: the kernel frees the memory when the last process that maps it or
holds its descriptor ends, also after a SIGKILL of the parent (its workers end by themselves, see
:mod:`maivar.core.parallel`; only a worker stuck forever in native code would keep it until it is killed) and
there is no stale entry to clean. (``multiprocessing.shared_memory`` names its segments in ``/dev/shm``: one
outlives a SIGKILLed parent unless its resource tracker survives to unlink it, and a container's default
64 MiB ``/dev/shm`` turns a large ring into a SIGBUS on first write.)

The memory is reserved when the ring is created (``posix_fallocate``): a machine without room for it fails
there, with an ``OSError`` the caller can fall back from, not with a SIGBUS in a worker half-way through a run.

The ring travels to worker processes as a ``Process`` argument: under ``fork`` the child inherits the mapping;
under ``spawn`` and ``forkserver`` its descriptor is passed along (``multiprocessing.reduction.DupFd``) and the
child maps it again. Who writes which slot when is the user's business (:func:`maivar.core.parallel.guarded_imap`
gives each slot to one item at a time).
"""

from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

ALIGN = 4096  # every slot starts on a page: a slot's array is aligned for any dtype and for DMA


def _anonymous_file(size: int) -> int:
    """A descriptor of ``size`` bytes of anonymous shared memory, reserved."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("maivar-slots", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        with tempfile.TemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as fh:
            fd = os.dup(fh.fileno())
    try:
        os.ftruncate(fd, size)
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)  # ENOSPC/ENOMEM now rather than SIGBUS at the first write
        return fd
    except BaseException:
        os.close(fd)
        raise


class SlotRing:
    """``n_slots`` slots of ``slot_bytes`` bytes each in one anonymous shared mapping (see the module docstring)."""

    def __init__(self, n_slots: int, slot_bytes: int, *, _fd: int | None = None):
        if n_slots < 1 or slot_bytes < 1:
            raise ValueError(f"a ring needs at least one slot of at least one byte (got {n_slots} x {slot_bytes})")
        self.n_slots, self.slot_bytes = int(n_slots), int(slot_bytes)
        self.stride = -(-self.slot_bytes // ALIGN) * ALIGN
        size = self.n_slots * self.stride
        self.fd = _anonymous_file(size) if _fd is None else _fd
        self._map = mmap.mmap(self.fd, size)
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)
        self.owner = os.getpid()

    def array(self, slot: int, shape: tuple[int, ...], dtype, *, writable: bool = True) -> np.ndarray:
        """A C-contiguous ``shape`` x ``dtype`` array over slot ``slot`` (it must fit)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not 0 <= slot < self.n_slots or nbytes > self.slot_bytes:
            raise ValueError(f"slot {slot} of {self.n_slots} cannot hold {shape} {dtype} ({nbytes} bytes; a slot "
                             f"holds {self.slot_bytes})")
        start = slot * self.stride
        out = self._bytes[start : start + nbytes].view(dtype).reshape(shape)
        if not writable:
            out.flags.writeable = False
        return out

    def close(self) -> None:
        """Drop this process's mapping and descriptor; the memory goes when every process has done so. Arrays
        still handed out keep the mapping alive until they are collected."""
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        self._bytes = None
        try:
            self._map.close()
        except BufferError:  # an array over the ring is still referenced: unmapped when the last one goes
            pass

    def __reduce__(self):
        # Pickled only to start a spawn/forkserver worker: the descriptor goes with the new process.
        from multiprocessing.reduction import DupFd

        return _attach, (DupFd(self.fd), self.n_slots, self.slot_bytes)

    def __enter__(self) -> SlotRing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _attach(dupfd, n_slots: int, slot_bytes: int) -> SlotRing:
    return SlotRing(n_slots, slot_bytes, _fd=dupfd.detach())
