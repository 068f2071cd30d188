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
from maivar.heads.join import fit_normalization, load_features, video_input
from maivar.heads.mlp import MLP
from maivar.heads.training import standardized

from head_data import make_features, make_manifest, write_store


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


# ------------------------------------------------------------------------------------------- the heads' reads


def _reference_normalization(x_train, eps=1e-6):
    """The standardization as it was fitted before it was chunked: numpy over the whole copy of the train rows."""
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    std = np.where(std < eps, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


@pytest.mark.parametrize("dim", [1, 3, 40])
def test_the_chunked_standardization_is_numpys_bit_for_bit(dim):
    rng = np.random.default_rng(dim)
    x = (rng.standard_normal((501, dim)) * rng.uniform(0.1, 50, dim) + rng.uniform(-20, 20, dim)).astype(np.float32)
    x[:, 0] = 2.5  # a constant feature: its std becomes 1
    rows = np.flatnonzero(rng.random(len(x)) < 0.7)
    want = _reference_normalization(x[rows])
    for chunk_bytes in (1, 8 * dim * 7, 1 << 30):  # one row, 7 rows, all of them at a time
        got = fit_normalization(x, rows, chunk_bytes=chunk_bytes)
        assert got[0].tobytes() == want[0].tobytes() and got[1].tobytes() == want[1].tobytes()
    assert fit_normalization(x)[1].tobytes() == _reference_normalization(x)[1].tobytes()


def test_standardized_rows_are_the_rows_standardized():
    model = MLP(6, [4], 2)
    rng = np.random.default_rng(0)
    model.set_normalization(torch.tensor(rng.standard_normal(6)), torch.tensor(rng.uniform(0.5, 2, 6)))
    x = rng.standard_normal((50, 6)).astype(np.float32)
    rows = np.array([3, 1, 4, 1, 5, 9, 26, 49])
    want = standardized(model, x[rows], torch.device("cpu"))
    assert torch.equal(standardized(model, x, torch.device("cpu"), rows=rows, chunk_bytes=1), want)


@pytest.mark.parametrize("case", ["video_mean", "video_flatten", "audio_flips"])
def test_features_read_in_chunks_equal_the_whole_read(tmp_path, case):
    """One row at a time, or all at once: the same head input, with a NaN row left out as it is read; and the
    segment mean (video) the one of the whole N x T x D array."""
    manifest = make_manifest(3, 5, 2)
    index = manifest.set_index("id")
    if case == "audio_flips":
        feats = make_features(manifest, 6, segments=4, seed=1)  # N x 4 flip variants x D
        attrs, modality, segments = {"flips": '["none", "horizontal", "vertical", "both"]'}, "audio", None
    else:
        feats = make_features(manifest, 6, segments=5, seed=1)
        attrs, modality, segments = {}, "video", case.split("_")[1]
    feats[4, 2, 3] = np.nan
    write_store(tmp_path / "f.h5", manifest, feats, attrs=attrs)
    whole = load_features(tmp_path / "f.h5", index, modality, segments=segments, read_bytes=1 << 30)
    rows = load_features(tmp_path / "f.h5", index, modality, segments=segments, read_bytes=1)
    keep = [i for i in range(len(manifest)) if i != 4]
    assert rows.ids == whole.ids == [manifest["id"].iloc[i] for i in keep]
    assert [r.id for r in rows.excluded] == [manifest["id"].iloc[4]]
    assert rows.x.tobytes() == whole.x.tobytes()
    if case == "audio_flips":
        assert rows.variants.tobytes() == whole.variants.tobytes() == feats[keep].tobytes()
        assert np.array_equal(rows.x, feats[keep, 0])
    else:
        assert rows.x.tobytes() == video_input(feats[keep], segments).tobytes()
