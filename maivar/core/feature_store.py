"""The HDF5 files that carry audio images and features from one stage to the next.

Layout of every store (``images.h5``, ``audio.h5``, ``video.h5``)::

    /<data>            N x ...   the payload: ``images`` (uint8) or ``features`` (float)
    /ids               N         clip ids (UTF-8), aligned with the payload rows and the manifest's ``id``
    /labels            N         int64 contiguous class labels
    /rejected/ids      R         every manifest clip that is NOT in /ids, with the reason
    /rejected/reasons  R         (codes from :mod:`maivar.rejections`), inherited from the input store
    /rejected/details  R         plus this stage's own
    attrs              what made it (representation, backbone, weights, ...) + ``complete = True``

``complete`` is set last, and the file is written to a temporary path and renamed into place
(:mod:`maivar.atomic`), so a reader that finds the file finds it whole; :func:`open_store` still checks
the attribute and refuses a file without it. Datasets are created with ``track_times=False`` so that the
same inputs give byte-identical files.

Compression must be deterministic too (DVC hashes the bytes): never h5py's LZF, whose bundled liblzf is built
with ``INIT_HTAB 0`` (its hash table left uninitialized on the stack), so the same rows can compress to other
bytes depending on what ran before: seen here, 3 of 6 two-process ``extract_audio`` runs wrote a chunk 3 bytes
longer, the data equal. Audio images use gzip level 1 (zlib: the same bytes for the same input; on the
embedded default smaller and as fast as LZF was, 0.98 vs 1.50 MB); features are stored uncompressed (LZF
saved 1% of TSN's features and 28% of IRv2's small ones; gzip costs 3x LZF's time on them).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path
from .errors import PipelineError
from .rejections import Rejection

STR = h5py.string_dtype("utf-8")
DETERMINISTIC_COMPRESSION = (None, "gzip")


@dataclass
class Store:
    """A store read into memory (the payload too, unless ``load_data=False``: :func:`read_row_chunks` reads it a
    few rows at a time); ``shape`` is the payload's."""

    path: Path
    ids: list[str]
    labels: np.ndarray
    rejected: list[Rejection]
    attrs: dict
    data: np.ndarray | None = None
    shape: tuple[int, ...] = ()
    index: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.index = {clip_id: i for i, clip_id in enumerate(self.ids)}


def _attr(value):
    """HDF5 attributes take scalars and strings; anything else is stored as JSON."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float, str, np.integer, np.floating, np.bool_)):
        return value
    return json.dumps(value, sort_keys=True)


class StoreWriter:
    """Fill a store row by row (``write``), then ``finish`` it; use through :func:`create_store`.

    ``n`` is the most rows the store may hold (e.g. the manifest's length); write the kept rows at
    0, 1, 2, ... and ``finish`` trims the store to the number of ids it is given.
    """

    def __init__(self, h5: h5py.File, data_name: str, n: int, item_shape: Sequence[int], dtype, compression,
                 compression_opts):
        self._h5 = h5
        self.n = n
        # Chunked (one row a chunk) and resizable, so that ``finish`` can drop the unused tail when fewer
        # rows than planned were kept (clips rejected on the way).
        self.data = h5.create_dataset(
            data_name, shape=(n, *item_shape), maxshape=(None, *item_shape), dtype=dtype,
            chunks=(1, *item_shape), compression=compression, compression_opts=compression_opts, track_times=False,
        )
        self._written = np.zeros(n, dtype=bool)

    def write(self, row: int, value: np.ndarray) -> None:
        self.data[row] = value
        self._written[row] = True

    def write_rows(self, start: int, values: np.ndarray) -> None:
        self.data[start : start + len(values)] = values
        self._written[start : start + len(values)] = True

    def finish(self, ids: Sequence[str], labels: Sequence[int], rejected: Sequence[Rejection], attrs: dict) -> None:
        """Write ids, labels, rejections and attributes; rows ``len(ids):n`` (planned, never filled) are dropped."""
        if len(ids) > self.n or len(labels) != len(ids):
            raise ValueError(f"store has {self.n} rows but got {len(ids)} ids and {len(labels)} labels")
        if not self._written[: len(ids)].all():
            missing = int((~self._written[: len(ids)]).sum())
            raise ValueError(f"{missing} of {len(ids)} rows were never written")
        if self._written[len(ids):].any():
            raise ValueError(f"rows past the {len(ids)} ids were written: ids and rows are misaligned")
        if len(ids) < self.n:
            self.data.resize(len(ids), axis=0)
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in store")
        h5 = self._h5
        h5.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=STR, track_times=False)
        h5.create_dataset("labels", data=np.asarray(labels, dtype=np.int64), track_times=False)
        grp = h5.create_group("rejected", track_order=True)
        rej = sorted(rejected, key=lambda r: r.id)
        for name, col in (("ids", [r.id for r in rej]), ("reasons", [r.reason for r in rej]),
                          ("details", [r.detail for r in rej])):
            grp.create_dataset(name, data=np.array(col, dtype=object), dtype=STR, shape=(len(col),),
                               track_times=False)
        for key in sorted(attrs):
            h5.attrs[key] = _attr(attrs[key])
        h5.attrs["complete"] = True


@contextlib.contextmanager
def create_store(
    path: str | Path,
    *,
    data_name: str,
    n: int,
    item_shape: Sequence[int],
    dtype,
    compression: str | None = None,
    compression_opts: int | None = None,
) -> Iterator[StoreWriter]:
    """Create a store atomically: the file appears at ``path`` only after ``finish`` and a clean exit.

    ``compression``: ``None`` or ``"gzip"`` (with its level in ``compression_opts``); LZF is refused, its output
    is not deterministic (see the module's docstring)."""
    if compression not in DETERMINISTIC_COMPRESSION:
        raise ValueError(f"compression {compression!r}: use one of {sorted(map(str, DETERMINISTIC_COMPRESSION))} "
                         "(a store's bytes must depend only on its contents)")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as h5:
            writer = StoreWriter(h5, data_name, n, item_shape, dtype, compression, compression_opts)
            yield writer
            if not h5.attrs.get("complete", False):
                raise RuntimeError(f"store {path} was not finished (StoreWriter.finish was not called)")


def open_store(path: str | Path, data_name: str, *, load_data: bool = True) -> Store:
    """Read a store; a missing, unreadable or incomplete file is a one-line :class:`PipelineError`."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    try:
        with h5py.File(path, "r") as h5:
            if not h5.attrs.get("complete", False):
                raise PipelineError(f"{path} is incomplete (its writer was interrupted): rerun dvc repro")
            if data_name not in h5:
                raise PipelineError(f"{path} has no '{data_name}' dataset: is it the right file?")
            ids = [s.decode() if isinstance(s, bytes) else s for s in h5["ids"][()]]
            rej = h5["rejected"]
            rejected = [
                Rejection(*(v.decode() if isinstance(v, bytes) else v for v in row))
                for row in zip(rej["ids"][()], rej["reasons"][()], rej["details"][()], strict=True)
            ]
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}
            data = h5[data_name][()] if load_data else None
            return Store(path, ids, h5["labels"][()], rejected, attrs, data, tuple(h5[data_name].shape))
    except OSError as exc:
        raise PipelineError(f"{path} is not a readable HDF5 file ({exc}): delete it and rerun dvc repro") from None


READ_BYTES = 64 << 20  # what :func:`read_row_chunks` reads at a time


def read_row_chunks(path: str | Path, data_name: str, *, max_bytes: int = READ_BYTES) -> Iterator[np.ndarray]:
    """The payload of the store at ``path`` (opened by :func:`open_store` first), in row order, as many rows at a
    time as fit in ``max_bytes`` (at least one): a reader's memory does not grow with the store."""
    try:
        with h5py.File(path, "r") as h5:
            data = h5[data_name]
            row_bytes = int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize
            step = max(1, int(max_bytes) // max(1, row_bytes))
            for start in range(0, len(data), step):
                yield data[start : start + step]
    except OSError as exc:
        raise PipelineError(f"{path} is not a readable HDF5 file ({exc}): delete it and rerun dvc repro") from None


class LazyRows:
    """Row access to a store's payload that opens the file on first use, in whichever process uses it.

    Safe to hand to DataLoader workers under both ``fork`` and ``spawn``: only the path is pickled, and
    each process opens its own handle.
    """

    def __init__(self, path: str | Path, data_name: str):
        self.path = str(path)
        self.data_name = data_name
        with h5py.File(self.path, "r") as h5:
            self._len = len(h5[data_name])
        self._h5 = None

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, row: int) -> np.ndarray:
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        return self._h5[self.data_name][row]

    def __getstate__(self):
        return {"path": self.path, "data_name": self.data_name, "_len": self._len, "_h5": None}

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
