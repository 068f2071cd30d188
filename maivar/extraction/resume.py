"""Resumable extraction: the batches an interrupted run finished are not computed again.

Extracting UCF101's features on a laptop takes hours; an interruption (Ctrl-C, a closed lid, a SIGKILL)
must not cost them. While ``extract_audio`` / ``extract_video`` run, their finished batches are journaled
beside the output, in ``<output>.partial/<key>/``:

- a chunk file ``chunk-<start>-<stop>.npz`` holds the results of inputs ``[start, stop)``: the rows that
  gave features, those features, and the inputs rejected on the way (with their reasons). It is written
  atomically (temporary name, then rename) every ``every_s`` seconds and when the run stops for any
  reason, always at a batch boundary;
- ``key`` hashes everything the results depend on (the inputs' identity, the stage's settings, the
  weights' sha256): a journal made from other inputs or settings is never reused, and is removed.

A rerun takes the longest run of chunks from input 0, says so in the log, and starts after it. Because a
chunk ends at a batch boundary, the rerun forms the same batches as an uninterrupted run would, so the
final output is the same, byte for byte. The journal is deleted once the output is in place. It is not a
DVC output: DVC never sees a partial result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maivar.core.atomic import atomic_path
from maivar.core.rejections import Rejection

log = logging.getLogger(__name__)


@dataclass
class Resumed:
    """What a journal gives back: inputs ``[0, stop)`` are done."""

    stop: int = 0
    rows: list[int] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class Journal:
    """The journal of one output (``out_path``) for one set of inputs and settings (``identity``)."""

    def __init__(self, out_path: str | os.PathLike, identity: dict, *, every_s: float = 30.0):
        self.root = Path(f"{out_path}.partial")
        self.key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = self.root / self.key
        self.every_s = float(every_s)
        self._pending: list[tuple[int, int, list[int], np.ndarray, list[Rejection]]] = []
        self._last_write = time.monotonic()

    # ------------------------------------------------------------------------------------- reading

    def load(self) -> Resumed:
        """The finished prefix of an earlier, interrupted run with the same key (empty when there is none);
        journals of other keys are removed."""
        if self.root.is_dir():
            for other in sorted(self.root.iterdir()):
                if other.name != self.key:
                    log.info("removing %s: an interrupted run's journal for other inputs or settings", other)
                    shutil.rmtree(other, ignore_errors=True)
        chunks = []
        if self.dir.is_dir():
            for path in self.dir.glob("chunk-*-*.npz"):
                try:
                    start, stop = (int(x) for x in path.stem.split("-")[1:3])
                except ValueError:
                    continue
                chunks.append((start, stop, path))
        resumed = Resumed()
        for start, stop, path in sorted(chunks):
            if start != resumed.stop:
                break  # a gap: only the prefix from input 0 is used
            try:
                with np.load(path, allow_pickle=False) as z:
                    rows = z["rows"].astype(np.int64).tolist()
                    features = np.array(z["features"])
                    rejected = [Rejection(*r) for r in json.loads(str(z["rejected"]))]
            except Exception as exc:  # noqa: BLE001 - an unreadable chunk ends the usable prefix
                log.warning("ignoring journal chunk %s (%s): recomputing from input %d", path.name, exc, start)
                break
            resumed.rows.extend(rows)
            if len(features):
                resumed.features.append(features)
            resumed.rejected.extend(rejected)
            resumed.stop = stop
        return resumed

    # ------------------------------------------------------------------------------------- writing

    def add(self, start: int, stop: int, rows: list[int], features: np.ndarray, rejected: list[Rejection]) -> None:
        """Record the results of inputs ``[start, stop)`` (one batch); written with the next :meth:`write`,
        which happens here once ``every_s`` seconds have passed since the last one."""
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
                         rejected=np.asarray(json.dumps(rejected)))
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


def file_identity(path: str | os.PathLike) -> list:
    """``[path, size, mtime_ns]`` of a file (``[path, None, None]`` when it is missing): changes when it is
    rewritten, at the cost of one ``stat``."""
    try:
        st = os.stat(path)
    except OSError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]
