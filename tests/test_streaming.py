"""Nothing in memory grows with the dataset (issue 19, item 3): a store is assembled from the journal one chunk at a
time, byte for byte the store of the whole-in-memory assembly it replaced; the heads read a store in chunks of
rows (the segment mean taken as they read) and fit the standardization in chunks, the same numbers bit for bit.

The memory itself is measured by ``benchmarks/bench_scale.py`` (BENCHMARKS.md), not here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from maivar.core import rejections
from maivar.core.errors import PipelineError
from maivar.core.feature_store import create_store
from maivar.core.rejections import Rejection
from maivar.extraction.checkpoints import Weights
from maivar.extraction.job import Job
from maivar.extraction.resume import Journal, blocks


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


@dataclass
class _StoreJob(Job):
    """A job whose journal is filled by the test: ``n`` inputs, features ``shape`` each."""

    n: int = 0
    shape: tuple = ()

    def store_rows(self, done):
        ids = [f"v{r:03d}" for r in done.rows]
        return ids, [r % 3 for r in done.rows], done.rejected

    def item_shape(self):
        return self.shape


def _filled_job(tmp_path, n=45, batch=2, shape=(3, 5)) -> _StoreJob:
    """A journal as the extract stages leave it: batches journaled every so often and at each block's end, some
    inputs rejected, one batch rejected whole (no features), a chunk of many batches."""
    out = tmp_path / "features.h5"
    spans = blocks(n, batch)
    journal = Journal(out, {"toy": n}, every_s=3600.0, device="cpu")
    rng = np.random.default_rng(0)
    for span in spans:
        for start in range(span.start, span.stop, batch):
            stop = min(start + batch, span.stop)
            rows = [r for r in range(start, stop) if r % 7 != 3 and not 20 <= r < 22]
            rejected = [Rejection(f"v{r:03d}", rejections.DECODE_FAILED, "x") for r in range(start, stop)
                        if r not in rows]
            feats = rng.standard_normal((len(rows), *shape)).astype(np.float32) if rows else np.empty((0,), np.float32)
            journal.add(start, stop, rows, feats, rejected)
            if start == 8:
                journal.write()  # an every-so-often write in the middle of a block
        journal.write()
    weights = Weights("random", False, "0" * 64)
    return _StoreJob("videos", torch.device("cpu"), weights, {"backbone": "toy"}, journal, spans, n, shape)


def _assemble_in_memory(job: _StoreJob, out) -> None:
    """The assembly this branch replaced, kept as the reference: every block's features concatenated in memory,
    then written at once."""
    done, unfinished = job.journal.collect(job.spans)
    assert not unfinished
    ids, labels, rejected = job.store_rows(done)
    feats = np.concatenate(done.features) if done.features else np.empty((0, *job.item_shape()), np.float32)
    attrs = {**job.attrs, "device": ",".join(sorted(done.devices)) or job.device.type}
    with create_store(out, data_name="features", n=len(ids), item_shape=feats.shape[1:], dtype=np.float32) as w:
        if len(ids):
            w.write_rows(0, feats)
        w.finish(ids, labels, rejected, attrs)


@pytest.mark.parametrize("shape", [(3, 5), (7,)])
def test_streaming_assembly_writes_the_store_of_the_in_memory_assembly_byte_for_byte(tmp_path, shape):
    job = _filled_job(tmp_path, shape=shape)
    _assemble_in_memory(job, tmp_path / "reference.h5")
    done, unfinished = job.journal.collect(job.spans, features=False)
    assert not unfinished and not done.features and len(done.parts) > len(job.spans)  # read: the shapes only
    job.assemble(tmp_path / "features.h5", done)
    assert md5(tmp_path / "features.h5") == md5(tmp_path / "reference.h5")
    assert not job.journal.root.exists()


def test_a_chunk_unreadable_after_its_header_was_read_is_removed_and_one_line(tmp_path):
    job = _filled_job(tmp_path)
    done, _ = job.journal.collect(job.spans, features=False)
    path = done.parts[1][0]
    path.write_bytes(b"damaged")
    with pytest.raises(PipelineError, match=r"^journal chunk .* could not be read .*: removed, rerun to compute it"):
        job.assemble(tmp_path / "features.h5", done)
    assert not path.exists() and not (tmp_path / "features.h5").exists()
    assert job.journal.todo(job.spans)  # the rerun computes that chunk's inputs again
