"""What both extract stages do around their backbone: the journaled batch loop, a rank's share of the blocks, and
the store assembled from the journal.

A stage describes only its own part: where a batch of inputs comes from (images read in DataLoader workers,
videos decoded in guarded worker processes) as :class:`Batch` es, and the forward pass of its backbone.
:func:`journaled_batches` runs the forward pass over each batch (in chunks that halve on CUDA out of memory,
:class:`~maivar.extraction.inference.OomGuard`), journals the results (:mod:`maivar.extraction.resume`: a
finished block is on disk at once, and the finished batches survive an interruption) and shows the progress.
A stage's :class:`Job` (set up once per process by its ``make_job(spec, world)``,
:mod:`maivar.extraction.data_parallel`) fills its rank's blocks with it (:meth:`Job.fill`) and writes the store
from every block's journaled results (:meth:`Job.assemble`, one journal chunk at a time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from maivar.core.feature_store import create_store
from maivar.core.rejections import Rejection
from maivar.extraction.checkpoints import Weights
from maivar.extraction.data_parallel import World, rank_summary, rank_todo
from maivar.extraction.inference import OomGuard
from maivar.extraction.resume import Journal, Resumed

log = logging.getLogger(__name__)


class Batch(NamedTuple):
    """One batch of a stage's inputs: it accounts for the inputs ``[start, stop)``; ``rows`` are those of them
    that go through the backbone, ``inputs`` their data (one row each; empty when ``rows`` is), ``rejected`` a
    rejection for each of the others."""

    start: int
    stop: int
    rows: list[int]
    inputs: torch.Tensor | None
    rejected: list[Rejection]


@torch.inference_mode()
def journaled_batches(
    batches: Iterator[Batch],
    forward: Callable[[torch.Tensor], torch.Tensor],
    *,
    spans: Sequence[range],
    chunk: int,
    device: torch.device,
    journal: Journal | None,
    progress: bool,
    total: int,
    initial: int,
    desc: str,
    unit: str,
) -> Iterator[tuple[Batch, np.ndarray]]:
    """``(batch, features)`` for each of ``batches`` (a batch never spans two of ``spans``, the ascending, disjoint
    ranges of inputs they cover): ``forward`` over the batch's inputs on ``device``, ``chunk`` rows at a time at
    most (halved on CUDA out of memory). With a ``journal``, every batch is journaled, and written at once when it
    ends a span. ``total`` / ``initial``, ``desc`` / ``unit``: the progress bar's. ``batches`` is closed when the
    loop ends, however it ends (a generator's workers stop)."""
    spans = [span for span in spans if len(span)]
    if not spans:
        return
    on_cuda = device.type == "cuda"
    guard = OomGuard(chunk)
    span_stops = {span.stop for span in spans}
    try:
        with tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not progress, mininterval=1.0) as bar:
            for batch in batches:
                feats = np.empty((0,), np.float32)
                if batch.rows:
                    # A reused input buffer is refilled only when the next batch is asked for: after .cpu() here,
                    # which waits for the (non-blocking) copy to the device too.
                    feats = guard(forward, batch.inputs.to(device, non_blocking=on_cuda)).cpu().numpy()
                if journal is not None:
                    journal.add(batch.start, batch.stop, batch.rows, feats, batch.rejected)
                    if batch.stop in span_stops:
                        journal.write()  # a finished block is on disk at once
                bar.update(batch.stop - batch.start)
                yield batch, feats
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stop the workers also when the loop is left by an exception
        if journal is not None:
            journal.write_quietly()  # the finished batches survive an interruption


def journaled_prefix(journal: Journal | None, n: int, what: str) -> Resumed:
    """What an interrupted run with the same inputs and settings finished of ``n`` inputs (from the first on)."""
    if journal is None:
        return Resumed()
    done = journal.load(range(0, n))
    if done.stop:
        log.info("resuming: %d of %d %s were done by an interrupted run (%s)", done.stop, n, what, journal.dir)
    return done


@dataclass
class Job:
    """What an extract stage computes with, set up once per process; a stage's subclass says where its batches
    come from (:meth:`batches`), what its store holds (:meth:`store_rows`, :meth:`item_shape`) and what it does
    (:meth:`describe`)."""

    what: str  # the items, for the log: "images", "videos"
    device: torch.device
    weights: Weights
    attrs: dict  # the store's attributes (the device is added when it is assembled)
    journal: Journal
    spans: list[range]  # the blocks

    def batches(self, todo: list[range], world: World) -> Iterator[tuple[Batch, np.ndarray]]:
        """:func:`journaled_batches` over the inputs of ``todo`` (this rank's unfinished blocks)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the log: the inputs, the backbone, the device."""
        raise NotImplementedError

    def store_rows(self, done: Resumed) -> tuple[list[str], list[int], list[Rejection]]:
        """The store's ids, labels and rejections, from every block's journaled results; raise
        :class:`~maivar.core.errors.PipelineError` when they make no store."""
        raise NotImplementedError

    def item_shape(self) -> tuple[int, ...]:
        """The shape of one row of features (for a store without rows)."""
        raise NotImplementedError

    def fill(self, world: World, threads: int) -> dict:
        """Compute this rank's unfinished blocks into the journal; a summary for the log."""
        mine, todo = rank_todo(self.journal, self.spans, world, self.what)
        if world.rank == 0:
            log.info("%s, %d blocks", self.describe(), len(self.spans))
        rejected = 0
        for batch, _ in self.batches(todo, world):
            rejected += len(batch.rejected)  # journaled as they come: the store is assembled from the journal
        self.journal.write()
        return rank_summary(world, mine, todo, self.device, threads, rejected=rejected)

    def assemble(self, out_path: str | Path, done: Resumed) -> None:
        """The store, from every block's journaled results (``done``, in input order, collected without their
        features): the features are written as they are read from the journal, one chunk at a time, so the memory
        of an assembly does not grow with the store (the same bytes as writing them all at once: the store's
        HDF5 chunks are rows, allocated in row order either way). Then the journal goes."""
        ids, labels, rejected = self.store_rows(done)
        item_shape = tuple(done.parts[0][1][1:]) if done.parts else self.item_shape()
        attrs = {**self.attrs, "device": ",".join(sorted(done.devices)) or self.device.type}
        with create_store(out_path, data_name="features", n=len(ids), item_shape=item_shape,
                          dtype=np.float32) as w:
            row = 0
            for feats in self.journal.features(done):
                w.write_rows(row, feats)
                row += len(feats)
            w.finish(ids, labels, rejected, attrs)
        self.journal.discard()
        log.info("wrote %s: %s features (weights: %s), %d rejected", out_path,
                 " x ".join(map(str, (len(ids), *item_shape))), self.weights.source, len(rejected))
