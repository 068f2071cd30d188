"""Resumable extraction: the batches an interrupted run finished are not computed again.

Extracting UCF101's features on a laptop takes hours; an interruption (Ctrl-C, a closed lid, a SIGKILL)
must not cost them. While ``extract_audio`` / ``extract_video`` run, their finished batches are journaled
beside the output, in ``<output>.partial/<key>/``:

- a chunk file ``chunk-<start>-<stop>.npz`` holds the results of inputs ``[start, stop)``: the rows that
  gave features, those features, the inputs rejected on the way (with their reasons) and the device that
  computed them. It is written atomically (temporary name, then rename) every ``every_s`` seconds, at the
  end of every block (below), and when the run stops for any reason, always at a batch boundary;
- ``key`` hashes everything the results depend on (the inputs' identity, the stage's settings, the
  weights' sha256), but not the machine (device, processes, threads): a journal made from other inputs or
  settings is never reused, and is removed, while one filled on other machines (many GPUs, many nodes:
  :mod:`maivar.extraction.data_parallel`) is assembled anywhere.

The inputs are cut into **blocks** of a fixed number of batches (:func:`blocks`), the unit of work of a
process (data parallelism gives each rank its own blocks); batches never span two blocks and chunks never
span two blocks. :meth:`Journal.load` gives back, for one block (or the whole input), the longest run of
chunks from its start; a rerun starts after it. Because a chunk ends at a batch boundary, the rerun forms
the same batches as an uninterrupted run would, so the final output is the same, byte for byte
(:meth:`Journal.collect` lists it, block by block in input order, whatever process filled which block).
The store is assembled from the journal without holding its features: :meth:`Journal.collect` reads each
chunk's rows, rejections and device and only the header of its features (their shape), and
:meth:`Journal.features` then reads the features one chunk at a time, in input order, for the store's writer
(:meth:`maivar.extraction.job.Job.assemble`): the memory of an assembly is one chunk's, whatever the size of
the dataset. The journal is deleted once the output is in place. It is not a DVC output: DVC never sees a
partial result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maivar.core.atomic import atomic_path
from maivar.core.errors import PipelineError
from maivar.core.rejections import Rejection

log = logging.getLogger(__name__)


BATCHES_PER_BLOCK = 8


def blocks(n: int, batch: int) -> list[range]:
    """The blocks of ``n`` inputs: ``BATCHES_PER_BLOCK`` batches of ``batch`` each (the last one shorter)."""
    size = max(1, int(batch)) * BATCHES_PER_BLOCK
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


@dataclass
class Resumed:
    """What a journal gives back: the inputs from the span's start (0 without one) up to ``stop`` are done.

    ``features`` holds the features read (one array per chunk that has any); a journal read without them
    (``features=False``) lists instead, in ``parts``, the chunk files that hold them and each one's shape."""

    stop: int = 0
    rows: list[int] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    parts: list[tuple[Path, tuple[int, ...]]] = field(default_factory=list)

    def extend(self, other: Resumed) -> None:
        self.rows.extend(other.rows)
        self.features.extend(other.features)
        self.parts.extend(other.parts)
        self.rejected.extend(other.rejected)
        self.devices |= other.devices
        self.stop = other.stop


class Journal:
    """The journal of one output (``out_path``) for one set of inputs and settings (``identity``)."""

    def __init__(self, out_path: str | os.PathLike, identity: dict, *, every_s: float = 30.0, device: str = ""):
        self.root = Path(f"{out_path}.partial")
        self.key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = self.root / self.key
        self.every_s = float(every_s)
        self.device = str(device)  # recorded in each chunk: the store says what computed its features
        self._pending: list[tuple[int, int, list[int], np.ndarray, list[Rejection]]] = []
        self._last_write = time.monotonic()
        self._removed_others = False

    # ------------------------------------------------------------------------------------- reading

    def _remove_others(self) -> None:
        if self._removed_others or not self.root.is_dir():
            return
        self._removed_others = True
        for other in sorted(self.root.iterdir()):
            if other.is_dir() and other.name != self.key:
                log.warning("removing %s: an interrupted run's journal for other inputs or settings", other)
                shutil.rmtree(other, ignore_errors=True)

    def _chunks(self) -> list[tuple[int, int, Path]]:
        chunks = []
        if self.dir.is_dir():
            for path in self.dir.glob("chunk-*-*.npz"):
                try:
                    start, stop = (int(x) for x in path.stem.split("-")[1:3])
                except ValueError:
                    continue
                chunks.append((start, stop, path))
        return sorted(chunks)

    def load(self, span: range | None = None, *, chunks: list[tuple[int, int, Path]] | None = None,
             features: bool = True) -> Resumed:
        """The finished prefix of ``span`` (default: the whole input, from 0) that an earlier, interrupted run
        with the same key journaled (empty when there is none); journals of other keys are removed. Without
        ``features``, the chunks' features are not read, only their shapes (``Resumed.parts``)."""
        self._remove_others()
        start = span.start if span is not None else 0
        end = span.stop if span is not None else None
        resumed = Resumed(stop=start)
        for c_start, c_stop, path in chunks if chunks is not None else self._chunks():
            if c_start < resumed.stop:
                continue
            if c_start != resumed.stop or (end is not None and c_stop > end):
                break  # a gap, or past the span: only the prefix from the span's start is used
            try:
                with np.load(path, allow_pickle=False) as z:
                    rows = z["rows"].astype(np.int64).tolist()
                    feats = np.array(z["features"]) if features else None
                    shape = feats.shape if features else _member_shape(z, "features")
                    if len(rows) != shape[0]:
                        raise ValueError(f"{len(rows)} rows but {shape[0]} rows of features")
                    rejected = [Rejection(*r) for r in json.loads(str(z["rejected"]))]
                    device = str(z["device"]) if "device" in z.files else ""
            except Exception as exc:  # noqa: BLE001 - an unreadable chunk ends the usable prefix
                log.warning("ignoring journal chunk %s (%s): recomputing from input %d", path.name, exc, c_start)
                path.unlink(missing_ok=True)
                break
            resumed.rows.extend(rows)
            if shape[0]:
                if features:
                    resumed.features.append(feats)
                else:
                    resumed.parts.append((path, shape))
            resumed.rejected.extend(rejected)
            if device:
                resumed.devices.add(device)
            resumed.stop = c_stop
        return resumed

    def todo(self, spans: list[range]) -> list[range]:
        """What is left of each of ``spans`` after its journaled prefix (judged by the chunks' names, not read:
        :meth:`load` removes a chunk it cannot read); finished spans are left out."""
        self._remove_others()
        stops: dict[int, int] = {start: stop for start, stop, _ in self._chunks()}
        out = []
        for span in spans:
            at = span.start
            while at in stops and at < stops[at] <= span.stop:
                at = stops[at]
            if at != span.stop:
                out.append(range(at, span.stop))
        return out

    def collect(self, spans: list[range], *, features: bool = True) -> tuple[Resumed, list[range]]:
        """The journaled results of ``spans`` (blocks), in order, and the spans that are not finished; without
        ``features``, the features are left in the journal (:meth:`features` reads them)."""
        chunks = self._chunks()
        whole, unfinished = Resumed(), []
        for span in spans:
            done = self.load(span, chunks=chunks, features=features)
            if done.stop != span.stop:
                unfinished.append(span)
            whole.extend(done)
        return whole, unfinished

    def features(self, done: Resumed) -> Iterator[np.ndarray]:
        """The features of ``done`` (collected without them), one chunk at a time, in input order. A chunk that
        cannot be read now (its header could) is removed and is a one-line :class:`PipelineError`: a rerun
        computes it again."""
        for path, shape in done.parts:
            try:
                with np.load(path, allow_pickle=False) as z:
                    feats = np.array(z["features"])
                if feats.shape != tuple(shape):
                    raise ValueError(f"shape {feats.shape}, its header said {tuple(shape)}")
            except Exception as exc:  # noqa: BLE001 - the same as an unreadable chunk in load(): computed again
                path.unlink(missing_ok=True)
                raise PipelineError(f"journal chunk {path} could not be read ({str(exc).splitlines()[0][:200]}): "
                                    "removed, rerun to compute it again") from None
            yield feats

    # ------------------------------------------------------------------------------------- writing

    def add(self, start: int, stop: int, rows: list[int], features: np.ndarray, rejected: list[Rejection]) -> None:
        """Record the results of inputs ``[start, stop)`` (one batch); written with the next :meth:`write`,
        which happens here once ``every_s`` seconds have passed since the last one (and before a batch that
        does not follow on from the pending ones: a chunk covers contiguous inputs)."""
        if self._pending and self._pending[-1][1] != start:
            self.write()
        self._pending.append((start, stop, list(rows), np.asarray(features, dtype=np.float32), list(rejected)))
        if time.monotonic() - self._last_write >= self.every_s:
            self.write()

    def write(self) -> None:
        """Write the pending batches as one chunk file, atomically."""
        self._last_write = time.monotonic()
        if not self._pending:
            return
        start, stop = self._pending[0][0], self._pending[-1][1]
        rows = [r for p in self._pending for r in p[2]]
        feats = [p[3] for p in self._pending if len(p[3])]
        rejected = [(r.id, r.reason, r.detail) for p in self._pending for r in p[4]]
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / f"chunk-{start}-{stop}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, rows=np.asarray(rows, dtype=np.int64),
                         features=np.concatenate(feats) if feats else np.empty((0,), np.float32),
                         rejected=np.asarray(json.dumps(rejected)), device=np.asarray(self.device))
        self._pending.clear()

    def write_quietly(self) -> None:
        """:meth:`write` on the way out of a failed or interrupted run: a failure to journal is logged, and
        does not hide why the run stopped."""
        try:
            self.write()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not journal the finished batches in %s: %s", self.dir, exc)

    def discard(self) -> None:
        """Remove the whole journal (call once the output is in place)."""
        self._pending.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _member_shape(z, name: str) -> tuple[int, ...]:
    """The shape of array ``name`` of an open ``.npz`` (``np.load``), from its header: the data is not read."""
    with z.zip.open(f"{name}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(fh)
    return tuple(shape)


def file_identity(path: str | os.PathLike) -> list:
    """``[path, size, mtime_ns]`` of a file (``[path, None, None]`` when it is missing): changes when it is
    rewritten, at the cost of one ``stat``."""
    try:
        st = os.stat(path)
    except OSError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]
