"""Nothing in memory grows with the dataset (issue 19, item 3): a store is assembled from the journal one chunk at a
time, byte for byte the store of the whole-in-memory assembly it replaced; the heads read a store in chunks of
rows (the segment mean taken as they read) and fit the standardization in chunks, the same numbers bit for bit.

The memory itself is measured by ``benchmarks/bench_scale.py`` (BENCHMARKS.md), not here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

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
from maivar.heads.batches import standardized
from maivar.heads.join import fit_normalization, load_features, video_input
from maivar.heads.mlp import MLP
from maivar.heads.rows import DiskRows, Spill
from maivar.heads.training import set_determinism, train_head

from head_data import make_features, make_manifest, write_dataset, write_store


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


# --------------------------------------------------------------- features past runtime.heads.memory_mb: a file


def _disk_rows(tmp_path, x: np.ndarray, name: str = "rows") -> DiskRows:
    tmp_path.mkdir(parents=True, exist_ok=True)
    spill = Spill(tmp_path / "spill", 0)
    writer = spill.writer(name, x.shape[1:])
    for k in range(0, len(x), 7):  # appended in chunks, as load_features writes them
        writer.append(x[k : k + 7])
    return writer.finish()


def test_rows_in_a_file_read_as_the_array_reads_them(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 4, 6)).astype(np.float32)  # N x V x D: flip variants
    rows = _disk_rows(tmp_path, x)
    assert rows.shape == x.shape and len(rows) == 40 and rows.nbytes == x.nbytes
    for idx in (np.array([3, 1, 4, 1, 5, 9, 26, 39]), np.arange(10, 30), np.array([], np.int64), rng.permutation(40)):
        assert rows[idx].tobytes() == x[idx].tobytes()
    assert rows[5:17].tobytes() == x[5:17].tobytes()
    first = rows.part(0)  # variant 0 of every row: the same file, strided
    assert first.shape == (40, 6) and first[np.array([7, 2, 2, 39])].tobytes() == x[[7, 2, 2, 39], 0].tobytes()
    which = rng.integers(0, 4, 12)
    picked = rng.integers(0, 40, 12)
    assert rows.pick(picked, which).tobytes() == x[picked, which].tobytes()
    with pytest.raises(IndexError):
        rows[np.array([40])]


def test_a_file_cut_short_under_the_head_is_one_line(tmp_path):
    x = np.ones((10, 3), np.float32)
    rows = _disk_rows(tmp_path, x)
    with open(rows.path, "r+b") as fh:
        fh.truncate(5 * 12)
    with pytest.raises(PipelineError, match=r"ended early .* it was changed while the head read it$"):
        rows[np.array([8])]


@pytest.mark.parametrize("with_variants", [False, True])
def test_a_head_trained_from_a_file_is_the_head_trained_in_memory_bit_for_bit(tmp_path, with_variants):
    """train_head on rows in a file (read a batch at a time, standardized on the way) and on the same rows in
    memory (standardized once): the same weights, the same history, bit for bit."""
    rng = np.random.default_rng(5)
    n, dim = 90, 12
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((n, dim)) + y[:, None]).astype(np.float32)
    variants = None
    if with_variants:
        variants = rng.standard_normal((n, 4, 5)).astype(np.float32)
        x[:, :5] = variants[:, 0]
    train, test = np.flatnonzero(np.arange(n) % 3 != 0), np.flatnonzero(np.arange(n) % 3 == 0)
    runs = []
    for route in ("memory", "file"):
        set_determinism(0, 1)
        model = MLP(dim, [16], 3, 0.2)
        mean, std = fit_normalization(x, train)
        model.set_normalization(torch.from_numpy(mean), torch.from_numpy(std))
        xs = x if route == "memory" else _disk_rows(tmp_path / route, x)
        vs = variants if route == "memory" or variants is None else _disk_rows(tmp_path / route, variants, "v")
        history = train_head(model, xs, y, xs, y, epochs=4, lr=1e-2, batch_size=8, l1=1e-4, seed=1,
                             variants_train=vs, train_rows=train, test_rows=test)
        runs.append((history, model.state_dict()))
    (h_mem, w_mem), (h_file, w_file) = runs
    assert h_file == h_mem
    assert all(w_file[k].numpy().tobytes() == w_mem[k].numpy().tobytes() for k in w_mem)


def test_the_stages_with_features_in_a_file_write_what_they_write_in_memory(tmp_path, monkeypatch, caplog):
    """runtime.heads.memory_mb 0 (every head's features read from a file a batch at a time, the fusion's joined
    rows and the flip variants too) against the default (all in memory): train_audio, train_video, train_fusion and
    evaluate write the same bytes; the spill folders beside the outputs are gone afterwards."""
    import yaml

    from stage_cmd import run_stage_in_process

    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for head in ("audio_mlp", "video_mlp"):
        params[head].update({"hidden": [16], "epochs": 3, "batch_size": 8})
    params["fusion_mlp"].update({"epochs": 3, "batch_size": 16})
    manifest = write_dataset(tmp_path, classes=3, train_per_class=8, test_per_class=4)
    flips = make_features(manifest, 32, segments=4, seed=7)  # the audio store with flip variants (N x 4 x D)
    write_store(tmp_path / "data/features/audio.h5", manifest, flips,
                attrs={"pretrained": False, "representation": "chromagram", "flips": '["none", "h", "v", "both"]'})
    monkeypatch.chdir(tmp_path)
    stages = ("train_audio", "train_video", "train_fusion", "evaluate")
    outputs = {}
    for memory_mb in (2048, 0):
        params["runtime"]["heads"]["memory_mb"] = memory_mb
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        caplog.clear()
        with caplog.at_level("INFO"):
            for stage in stages:
                assert run_stage_in_process(stage, tmp_path, upstream=False) == 0, stage
        spilled = [r.getMessage() for r in caplog.records if "a batch at a time" in r.getMessage()]
        assert len(spilled) == (0 if memory_mb else 8), spilled  # audio; video; fusion, evaluate: each + join
        files = sorted(p for d in ("models", "metrics", "dvclive") for p in (tmp_path / d).rglob("*") if p.is_file())
        outputs[memory_mb] = {p.relative_to(tmp_path): _model_bytes(p) for p in files}
        assert not [p for p in tmp_path.rglob(".*.tmp-*")], "a spill folder was left behind"
    assert outputs[0].keys() == outputs[2048].keys() and len(outputs[0]) > 10
    assert outputs[0] == outputs[2048]


def _model_bytes(path: Path):
    """A file's bytes; a model file's tensors and record (torch.save's zip holds the same data; compared as such)."""
    if path.suffix != ".pt":
        return path.read_bytes()
    saved = torch.load(path, weights_only=True)
    return {k: v.numpy().tobytes() for k, v in saved.pop("state_dict").items()}, repr(saved)


def test_the_heads_read_only_their_manifest_columns(tmp_path):
    """The manifest's 19 columns take ~2 KB a clip in pandas; the heads keep the 4 they use (still checked)."""
    from maivar.core.manifest import read_manifest
    from maivar.heads.join import HEAD_COLUMNS

    manifest = make_manifest(2, 3, 1).assign(video_path="v.avi", audio_path="a.wav", fps=25.0)
    manifest.to_csv(tmp_path / "m.csv", index=False)
    assert list(read_manifest(tmp_path / "m.csv", HEAD_COLUMNS, only=True).columns) == list(HEAD_COLUMNS)
    assert "video_path" in read_manifest(tmp_path / "m.csv", HEAD_COLUMNS).columns
    manifest.assign(split="val").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PipelineError, match="split must be train or test"):
        read_manifest(tmp_path / "bad.csv", ("id", "label"), only=True)


def test_a_full_disk_under_the_spill_is_one_line(tmp_path):
    """/dev/full answers every write with ENOSPC: the head stops with one line naming the way out."""
    from maivar.heads.rows import RowWriter

    writer = RowWriter(Path("/dev/full"), (4,))
    with pytest.raises(PipelineError, match=r"^could not write the features to /dev \(No space left on device\): "
                                             r"free space there, or raise runtime.heads.memory_mb"):
        writer.append(np.ones((1 << 16, 4), np.float32))  # 1 MiB: past the write buffer
        writer.finish()


def test_a_killed_runs_spill_folder_is_removed_by_the_next_run_and_its_own_at_the_end(tmp_path):
    from maivar.heads.rows import spill_beside

    model = tmp_path / "models/video_mlp.pt"
    stale = tmp_path / "models/.video_mlp.pt.tmp-rows-99999999"
    stale.mkdir(parents=True)
    (stale / "01-video.f32").write_bytes(b"\0" * 64)
    with spill_beside(model, 0) as spill:
        assert not stale.exists()
        writer = spill.writer("video", (2,))
        writer.append(np.ones((3, 2), np.float32))
        assert writer.finish()[np.array([2])].tolist() == [[1.0, 1.0]]
        assert spill.directory.parent == model.parent and spill.directory.name.startswith(".video_mlp.pt.tmp-rows-")
    assert not any(model.parent.iterdir())
