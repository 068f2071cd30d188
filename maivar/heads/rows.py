"""The feature rows a head reads: in memory, or, past a memory budget, in a file read a batch at a time.

A head trains on N rows of features (N x D; N x V x D with flip variants). Below ``runtime.heads.memory_mb``
they are held in memory, and their standardized copy on the training device (the fast route: a step gathers
rows of one tensor). Past it, :func:`~maivar.heads.join.load_features` writes the rows, as they are read from the
store, into a raw float32 file in a :class:`Spill` folder beside the stage's output, and the head reads each
batch's rows from it (:class:`DiskRows`, ``pread``: the operating system's page cache, not the process, holds what
is read): what the process holds then does not grow with the features of the dataset. The numbers are the same
on both routes, bit for bit: the same rows in the same order, standardized element for element
(tests/test_streaming.py).

Which route is a machine setting (``runtime``, which no stage lists in dvc.yaml): moving to a machine with more
memory changes the speed, never a result, and reruns nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from maivar.core.atomic import TMP_MARK, remove_stale_temporaries
from maivar.core.errors import PipelineError

log = logging.getLogger(__name__)

ITEM = 4  # float32


class DiskRows:
    """``n`` rows of float32, each of shape ``row_shape``, in a raw file: row ``r`` is ``row_shape``'s bytes at
    ``r * stride + offset`` (a plain file of rows: ``stride`` = the row's bytes, ``offset`` 0).

    ``rows[idx]`` (an index array, in any order, or a slice) reads those rows into a new array, in that order:
    consecutive rows in one read. :meth:`part` gives the rows' ``k``-th sub-row (variant ``k`` of N x V x D) and
    :meth:`pick` one sub-row of each row. The file is opened where it is first read."""

    def __init__(self, path: str | os.PathLike, n: int, row_shape: tuple[int, ...], *, stride: int | None = None,
                 offset: int = 0):
        self.path, self.n, self.row_shape = Path(path), int(n), tuple(int(d) for d in row_shape)
        self.row_bytes = ITEM * int(np.prod(self.row_shape, dtype=np.int64))
        self.stride = self.row_bytes if stride is None else int(stride)
        self.offset = int(offset)
        self._fd: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.row_shape)

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return self.n * self.row_bytes

    def part(self, k: int) -> DiskRows:
        """Sub-row ``k`` of each row (rows of shape V x D -> D): the same file, no copy."""
        if not 0 <= k < self.row_shape[0]:
            raise IndexError(f"part {k} of rows shaped {self.row_shape}")
        return DiskRows(self.path, self.n, self.row_shape[1:], stride=self.stride,
                        offset=self.offset + k * self.row_bytes // self.row_shape[0])

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(self.n)[rows]
        rows = np.asarray(rows)
        if rows.ndim != 1 or (len(rows) and rows.dtype.kind not in "iu"):
            raise TypeError("DiskRows takes a slice or a 1-d array of row numbers")
        rows = self._checked(rows)
        out = np.empty((len(rows), *self.row_shape), np.float32)
        if self.stride != self.row_bytes:  # rows with gaps between them: one read a row
            for i, row in enumerate(rows.tolist()):
                self._pread(out[i], row, self.offset)
            return out
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows: one read each
        first = rows.tolist()
        for s, e in zip([0, *breaks.tolist()], [*breaks.tolist(), len(rows)], strict=True):
            if e > s:
                self._pread(out[s:e], first[s], self.offset)
        return out

    def pick(self, rows: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Row ``rows[i]``'s sub-row ``which[i]`` for each ``i`` (rows shaped V x D -> a len(rows) x D array), read
        with this file's handle."""
        rows = self._checked(np.asarray(rows, np.int64))
        sub_bytes = self.row_bytes // self.row_shape[0]
        out = np.empty((len(rows), *self.row_shape[1:]), np.float32)
        for i, (row, k) in enumerate(zip(rows.tolist(), np.asarray(which, np.int64).tolist(), strict=True)):
            self._pread(out[i], row, self.offset + k * sub_bytes)
        return out

    def _checked(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"row out of range 0..{self.n - 1}")
        return rows.astype(np.int64, copy=False)

    def _pread(self, out: np.ndarray, row: int, offset: int) -> None:
        """Fill ``out`` (one row or a run of consecutive rows) from row ``row``, ``offset`` bytes into it."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        view = memoryview(out).cast("B")
        got = os.preadv(self._fd, [view], row * self.stride + offset)
        if got != len(view):
            raise PipelineError(f"{self.path} ended early (a row of {self.row_bytes} B at row {row}): it was changed "
                                "while the head read it")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self):
        return {**self.__dict__, "_fd": None}

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


class RowWriter:
    """Appends rows (float32, shape ``row_shape``) to a file of a :class:`Spill`; :meth:`finish` gives them as
    :class:`DiskRows`."""

    def __init__(self, path: Path, row_shape: tuple[int, ...]):
        self.path, self.row_shape, self.n = path, tuple(row_shape), 0
        self._file = open(path, "wb")  # closed by finish

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows shaped {rows.shape[1:]}, expected {self.row_shape}")
        with self._one_line():
            self._file.write(memoryview(rows).cast("B"))
        self.n += len(rows)

    def finish(self) -> DiskRows:
        with self._one_line():
            self._file.close()
        return DiskRows(self.path, self.n, self.row_shape)

    @contextlib.contextmanager
    def _one_line(self) -> Iterator[None]:
        """A full disk (or any write error) is one line naming the folder and the way out, not a traceback."""
        try:
            yield
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._file.close()
            raise PipelineError(
                f"could not write the features to {self.path.parent} ({exc.strerror or exc}): free space there, or "
                "raise runtime.heads.memory_mb to keep them in memory") from None


class Spill:
    """A head's features past ``budget`` bytes: files in ``directory`` (made by :func:`spill_beside`).

    :meth:`holds` says whether a route that holds ``nbytes`` of features in memory stays within the budget."""

    def __init__(self, directory: Path, budget: int):
        self.directory, self.budget, self._count = Path(directory), int(budget), 0

    def holds(self, nbytes: int) -> bool:
        return int(nbytes) <= self.budget

    def writer(self, name: str, row_shape: tuple[int, ...]) -> RowWriter:
        self._count += 1
        self.directory.mkdir(exist_ok=True)
        return RowWriter(self.directory / f"{self._count:02d}-{name}.f32", row_shape)


@contextlib.contextmanager
def spill_beside(final: str | os.PathLike, memory_mb: int) -> Iterator[Spill]:
    """A :class:`Spill` with a budget of ``memory_mb`` MB (``runtime.heads.memory_mb``) whose folder is a hidden
    sibling of the stage's output ``final`` (``.NAME.tmp-rows-PID``: on the output's disk, not in /tmp, which may be
    memory; git-ignored; a killed run's folder is removed by the next write of ``final``,
    :func:`maivar.core.atomic.remove_stale_temporaries`). The folder, made only when a file is spilled, is removed
    at the end."""
    final = Path(final)
    directory = final.parent / f".{final.name}{TMP_MARK}rows-{os.getpid()}"
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(final):  # a killed run's (DVC runs one stage at a time)
        log.info("removed %s, left by an interrupted run", stale)
    try:
        yield Spill(directory, int(memory_mb) << 20)
    finally:
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)


def is_spilled(x) -> bool:
    return isinstance(x, DiskRows)
