"""Training the heads and the training/evaluate stages end to end on tiny fake features (maivar.heads)."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from maivar.core import rejections
from maivar.core.errors import PipelineError
from maivar.core.manifest import read_manifest
from maivar.heads.batches import standardized
from maivar.heads.join import HEAD_COLUMNS, Features, join_modalities, load_features, video_input
from maivar.heads.mlp import MLP
from maivar.heads.model_files import load_model
from maivar.heads.training import (
    HeadStep,
    accuracy,
    fit,
    head_loss,
    l1_penalty,
    predict,
    set_determinism,
    train_head,
)

from head_data import make_features, make_manifest, write_dataset, write_store
from stage_cmd import run_stage, run_stage_in_process, stage_argv

ROOT = Path(__file__).resolve().parents[1]
FAST = {"hidden": [32], "dropout": 0.2, "epochs": 15, "lr": 3.0e-3, "batch_size": 16}


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """set_determinism changes process-wide torch settings: give other test modules theirs back."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.set_num_threads(threads)


def _stage(name):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project(tmp_path, monkeypatch, **data):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["audio_mlp"].update(FAST)
    params["video_mlp"].update(FAST)
    params["fusion_mlp"].update({"epochs": 10, "lr": 1.0e-3, "batch_size": 32})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    manifest = write_dataset(tmp_path, **data)
    monkeypatch.chdir(tmp_path)
    return manifest


def _run(*names):
    """Run the stages in this process, each with its dvc.yaml command line."""
    for name in names:
        with mock.patch.object(sys, "argv", stage_argv(name)[1:]):
            _stage(name).main()


# ------------------------------------------------------------------------------------------ loss
def test_l1_term_is_in_the_loss():
    torch.manual_seed(0)
    model = MLP(6, [5], 3)
    logits, y = model(torch.randn(4, 6)), torch.tensor([0, 1, 2, 0])
    ce = torch.nn.functional.cross_entropy(logits, y)
    expected_l1 = sum(layer.weight.abs().sum() for layer in model.linears())
    torch.testing.assert_close(l1_penalty(model), expected_l1)
    torch.testing.assert_close(head_loss(model, logits, y, 0.5), ce + 0.5 * expected_l1)
    with torch.no_grad():
        assert float(head_loss(model, logits, y, 0.5)) > float(head_loss(model, logits, y, 0.0))


def test_l1_weight_shrinks_the_trained_weights():
    manifest = make_manifest(3, 10, 0)
    x, y = make_features(manifest, 16, signal=2.0), manifest["label"].to_numpy()
    norms = []
    for l1 in (0.0, 1e-2):
        set_determinism(0, 1)
        model = MLP(16, [16], 3)
        train_head(model, x, y, x[:0], y[:0], epochs=20, lr=1e-2, batch_size=8, l1=l1, seed=0)
        norms.append(float(l1_penalty(model).detach()))
    assert norms[1] < 0.7 * norms[0]


class _NoStep:
    """An optimizer that leaves the parameters alone (so that a step's gradients can be read afterwards)."""

    def step(self):
        pass


@pytest.mark.parametrize("l1", [1e-3, 0.0])
def test_a_step_has_head_loss_gradients_and_loss(l1):
    """HeadStep's gradients (L1 folded into the weight gradient's matrix product, written into kept buffers) and
    loss equal a plain autograd step on :func:`head_loss` with the same dropout draws: the same math (bit for bit
    here; float32 rounding allowed for other BLAS builds). Two steps: the buffers carry nothing over."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 24)).astype(np.float32), rng.integers(0, 5, 40)
    model = MLP(24, [32, 16], 5, dropout=0.3).train()
    model.set_normalization(torch.tensor(x.mean(0)), torch.tensor(x.std(0) + 0.5))
    with torch.no_grad():
        model.linears()[0].weight[:, :3] = 0.0  # sgn(0) = 0: no L1 pull on exact zeros (Algorithm 1's audio columns)
    step = HeadStep(model, _NoStep(), l1)
    xs = standardized(model, x, torch.device("cpu"))
    for rows in (slice(0, 16), slice(16, 40)):
        torch.manual_seed(5)
        loss, correct = step(xs[rows], torch.tensor(y[rows]))
        ours = {name: p.grad.clone() for name, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        logits = model(torch.tensor(x[rows]))
        reference = head_loss(model, logits, torch.tensor(y[rows]), l1)
        reference.backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(ours[name], p.grad, rtol=1e-6, atol=1e-9, msg=name)
        torch.testing.assert_close(loss, reference.detach(), rtol=1e-6, atol=0.0)
        assert int(correct) == int((logits.argmax(1) == torch.tensor(y[rows])).sum())


def _plain_loop(model, x, y, x_test, y_test, *, epochs, lr, batch_size, l1, seed, variants=None):
    """The straightforward loop the fast route replaces (same batch order, flip draws, dropout, fused Adam)."""
    gen, flip_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    xt, yt = torch.tensor(x), torch.tensor(y)
    history = []
    for epoch in range(epochs):
        model.train()
        x_epoch = xt
        if variants is not None:
            x_epoch = xt.clone()
            x_epoch[:, : variants.shape[2]] = torch.tensor(variants)[
                torch.arange(len(x)), torch.randint(variants.shape[1], (len(x),), generator=flip_gen)]
        order, total, correct = torch.randperm(len(x), generator=gen), 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            logits = model(x_epoch[idx])
            loss = head_loss(model, logits, yt[idx], l1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
        history.append({"epoch": epoch + 1, "train/loss": total / len(x), "train/acc": 100.0 * correct / len(x),
                        "test/acc": accuracy(predict(model, x_test), y_test)})
    return history


@pytest.mark.parametrize("with_variants", [False, True])
def test_training_equals_the_plain_loop(with_variants):
    """train_head (features standardized once, HeadStep, counts kept on the device until the epoch ends) trains
    as the plain per-batch loop does: the same weights and accuracies (bit for bit here), the same losses to
    float32 rounding (the L1 penalty of the logged loss is summed in another order)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(75, 20)).astype(np.float32), rng.integers(0, 4, 75)
    variants = np.repeat(x[:, None, :6], 3, axis=1) + rng.normal(size=(75, 3, 6)).astype(np.float32)
    runs = []
    for route in (_plain_loop, train_head):
        set_determinism(3, 1)
        model = MLP(20, [24, 12], 4, dropout=0.4)
        model.set_normalization(torch.tensor(x.mean(0)), torch.tensor(x.std(0)))
        kwargs = {"variants" if route is _plain_loop else "variants_train": variants if with_variants else None}
        history = route(model, x[:60], y[:60], x[60:], y[60:], epochs=4, lr=1e-2, batch_size=16, l1=1e-3, seed=5,
                        **kwargs)
        runs.append((history, model.state_dict()))
    (plain, plain_state), (ours, our_state) = runs
    for key in plain_state:
        torch.testing.assert_close(our_state[key], plain_state[key], rtol=1e-5, atol=1e-7, msg=key)
    assert [(h["epoch"], h["train/acc"], h["test/acc"]) for h in ours] == \
        [(h["epoch"], h["train/acc"], h["test/acc"]) for h in plain]
    assert [h["train/loss"] for h in ours] == pytest.approx([h["train/loss"] for h in plain], rel=1e-6)


def test_training_runs_on_a_named_device_and_returns_the_model_home():
    """``device`` names where to train (the CUDA path is the same code with the tensors there); the model comes
    back where it was, and training on the named CPU equals training where the model is."""
    manifest = make_manifest(3, 10, 4)
    x, y = make_features(manifest, 12), manifest["label"].to_numpy()
    runs = []
    for device in (None, "cpu"):
        set_determinism(2, 1)
        model = MLP(12, [16], 3, dropout=0.5)
        runs.append((train_head(model, x, y, x, y, epochs=3, lr=1e-3, batch_size=4, l1=1e-4, seed=2, device=device),
                     model))
        assert model.mean.device.type == "cpu" and all(p.device.type == "cpu" for p in model.parameters())
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1].state_dict().values(), runs[1][1].state_dict().values(),
                                                 strict=True))


def test_set_determinism_keeps_torch_from_filling_new_tensors():
    """With deterministic algorithms on, torch fills every new tensor with NaN unless told not to: a debugging aid
    that doubled a head's step time. set_determinism turns it off (determinism does not depend on it)."""
    set_determinism(0, 1)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert torch.get_num_threads() == 1


# -------------------------------------------------------------------------------------- learning
def test_training_learns_separable_features():
    manifest = make_manifest(4, 15, 8)
    x, y = make_features(manifest, 20, signal=3.0), manifest["label"].to_numpy()
    test, train = (manifest["split"] == "test").to_numpy(), (manifest["split"] == "train").to_numpy()
    set_determinism(0, 1)
    model = MLP(20, [32], 4, dropout=0.1)
    history = train_head(model, x[train], y[train], x[test], y[test], epochs=30, lr=3e-3, batch_size=16, l1=1e-5,
                         seed=0)
    assert history[-1]["train/loss"] < 0.5 * history[0]["train/loss"]
    assert history[-1]["test/acc"] >= 90.0
    assert set(history[0]) == {"epoch", "train/loss", "train/acc", "test/acc"}


def test_training_is_deterministic():
    """The same inputs and params give bit-identical weights and metrics (dropout, batch order, flip draws, L1)."""
    manifest = make_manifest(3, 10, 4)
    x, y = make_features(manifest, 12), manifest["label"].to_numpy()
    variants = np.repeat(x[:, None, :5], 4, axis=1) + np.random.default_rng(0).normal(size=(len(x), 4, 5))
    states = []
    for _ in range(2):
        set_determinism(7, 1)
        model = MLP(12, [16], 3, dropout=0.5)
        hist = train_head(model, x, y, x, y, epochs=5, lr=1e-3, batch_size=4, l1=1e-4, seed=7,
                          variants_train=variants.astype(np.float32))
        states.append((hist, model.state_dict()))
    assert states[0][0] == states[1][0]
    for k in states[0][1]:
        assert torch.equal(states[0][1][k], states[1][1][k])


# ----------------------------------------------------------------------------------------- data
def test_video_input_mean_or_flatten():
    f = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert np.allclose(video_input(f, "mean"), f.mean(axis=1))
    assert video_input(f, "flatten").shape == (2, 12)
    with pytest.raises(PipelineError, match="video_mlp.segments"):
        video_input(f, "max")


def _manifest_file(tmp_path, manifest):
    p = tmp_path / "manifest.csv"
    manifest.to_csv(p, index=False)
    return read_manifest(p, HEAD_COLUMNS)


def test_store_id_not_in_manifest_is_an_error(tmp_path):
    full = make_manifest(2, 3, 1)
    manifest = _manifest_file(tmp_path, full.iloc[1:])
    write_store(tmp_path / "a.h5", full, make_features(full, 4))
    with pytest.raises(PipelineError, match="not in the manifest"):
        load_features(tmp_path / "a.h5", manifest, "audio")


def test_label_disagreeing_with_manifest_is_an_error(tmp_path):
    full = make_manifest(2, 3, 1)
    manifest = _manifest_file(tmp_path, full)
    cid = full["id"].iloc[0]
    write_store(tmp_path / "a.h5", full, make_features(full, 4), labels={cid: 1})
    with pytest.raises(PipelineError, match=f"clip {cid} has label 1 but the manifest says 0"):
        load_features(tmp_path / "a.h5", manifest, "audio")


def test_manifest_clip_neither_held_nor_rejected_is_an_error(tmp_path):
    full = make_manifest(2, 3, 1)
    manifest = _manifest_file(tmp_path, full)
    write_store(tmp_path / "a.h5", full.iloc[1:], make_features(full.iloc[1:], 4))
    with pytest.raises(PipelineError, match="neither holds nor rejects 1 manifest clip"):
        load_features(tmp_path / "a.h5", manifest, "audio")


def test_nonfinite_features_are_excluded_with_a_reason(tmp_path):
    full = make_manifest(2, 3, 1)
    manifest = _manifest_file(tmp_path, full)
    x = make_features(full, 4)
    x[2, 1] = np.nan
    x[5, 0] = np.inf
    write_store(tmp_path / "a.h5", full, x)
    feats = load_features(tmp_path / "a.h5", manifest, "audio")
    bad = [full["id"].iloc[2], full["id"].iloc[5]]
    assert [r.id for r in feats.excluded] == bad
    assert {r.reason for r in feats.excluded} == {rejections.NONFINITE_FEATURES}
    assert not set(bad) & set(feats.ids) and np.isfinite(feats.x).all() and len(feats.ids) == len(full) - 2


def _feats(modality, ids, labels, rejected=None):
    return Features(modality, ids, np.ones((len(ids), 2), np.float32) * len(modality), np.array(labels), {},
                    rejected or {})


def test_join_excludes_ids_the_other_modality_records_as_rejected():
    audio = _feats("audio", ["a", "b", "c"], [0, 1, 0])
    video = _feats("video", ["a", "c"], [0, 0], rejected={"b": rejections.DECODE_FAILED})
    fused, excluded = join_modalities(audio, video)
    assert fused.ids == ["a", "c"] and fused.x.shape == (2, 4)
    assert np.all(fused.x[:, :2] == 5) and np.all(fused.x[:, 2:] == 5)  # audio columns first
    assert [(r.id, r.reason) for r in excluded] == [("b", "video:decode_failed")]


def test_join_fails_on_an_unrecorded_missing_id_or_a_label_disagreement():
    with pytest.raises(PipelineError, match="clip b has audio features but is neither in the video"):
        join_modalities(_feats("audio", ["a", "b"], [0, 1]), _feats("video", ["a"], [0]))
    with pytest.raises(PipelineError, match="clip a has label 0 in the audio features but 1 in the video"):
        join_modalities(_feats("audio", ["a"], [0]), _feats("video", ["a"], [1]))


def test_class_without_training_example_is_an_error(tmp_path):
    full = make_manifest(3, 4, 2)
    full.loc[(full["label"] == 2), "split"] = "test"
    manifest = _manifest_file(tmp_path, full)
    write_store(tmp_path / "a.h5", full, make_features(full, 4))
    feats = load_features(tmp_path / "a.h5", manifest, "audio")
    with pytest.raises(PipelineError, match="1 class\\(es\\) have no training example \\(Class2\\)"):
        fit(feats, manifest, MLP(4, [4], 3), epochs=1, lr=1e-3, batch_size=4, l1=0.0, seed=0)


# ------------------------------------------------------------------------------------ end to end
def test_stages_end_to_end_metric_keys_and_fusion_starts_from_video(tmp_path, monkeypatch):
    manifest = _project(tmp_path, monkeypatch)
    _run("train_audio", "train_video", "train_fusion", "evaluate")
    metrics = json.loads(Path("metrics/metrics.json").read_text())
    for head in ("audio", "video", "fusion"):
        assert set(metrics[head]) == {"top1", "top5", "mean_class_acc"}
        assert 0.0 <= metrics[head]["top1"] <= metrics[head]["top5"] <= 100.0
    assert metrics["test_clips"] == int((manifest["split"] == "test").sum())
    assert metrics["pretrained"] == {"audio": False, "video": False}
    assert metrics["representation"] == "chromagram"
    assert metrics["fusion"]["top1"] >= max(metrics["audio"]["top1"], metrics["video"]["top1"])
    for head in ("audio", "video", "fusion"):
        saved = torch.load(f"models/{head}_mlp.pt", weights_only=True)
        assert {"state_dict", "config", "classes", "feature_stats"} <= set(saved)
        loss = Path(f"dvclive/{head}".replace(head, f"train_{head}")) / "plots/metrics/train/loss.tsv"
        assert len(loss.read_text().splitlines()) == 1 + len(saved["history"])
    confusion = Path("metrics/confusion.csv").read_text().splitlines()
    assert confusion[0] == "id,actual,predicted" and len(confusion) == 1 + metrics["test_clips"]
    predicted = pd.read_csv("metrics/predictions.csv")
    assert len(predicted) == metrics["test_clips"] and predicted["id"].is_monotonic_increasing
    fusion_top1 = (predicted["fusion_pred"] == predicted["label"]).mean() * 100
    assert fusion_top1 == pytest.approx(metrics["fusion"]["top1"], abs=1e-3)

    # determinism: the same features give the same metrics and weights on a rerun
    first = Path("metrics/metrics.json").read_bytes()
    before = load_model("models/audio_mlp.pt")[0].state_dict()
    _run("train_audio", "evaluate")
    assert Path("metrics/metrics.json").read_bytes() == first
    after = load_model("models/audio_mlp.pt")[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fusion_at_epoch_zero_equals_the_video_model(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch)
    _run("train_video")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["fusion_mlp"]["epochs"] = 0
    Path("params.yaml").write_text(yaml.safe_dump(params))
    _run("train_audio", "train_fusion", "evaluate")
    metrics = json.loads(Path("metrics/metrics.json").read_text())
    assert metrics["fusion"] == metrics["video"]


def test_recorded_video_rejection_is_excluded_from_fusion_and_counted(tmp_path, monkeypatch):
    manifest = _project(tmp_path, monkeypatch)
    test_id = manifest.loc[manifest["split"] == "test", "id"].iloc[0]
    video = make_features(manifest, 24, segments=5, seed=1)
    write_store(Path("data/features/video.h5"), manifest, video, drop={test_id: rejections.DECODE_FAILED})
    _run("train_audio", "train_video", "train_fusion", "evaluate")
    metrics = json.loads(Path("metrics/metrics.json").read_text())
    assert metrics["excluded_test_clips"] == 1
    assert metrics["test_clips"] == int((manifest["split"] == "test").sum()) - 1
    saved = torch.load("models/fusion_mlp.pt", weights_only=True)
    assert {"id": test_id, "reason": "video:decode_failed", "detail": "no video features"} in saved["excluded"]


def test_fusion_fails_loudly_when_the_video_mlp_does_not_fit(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch)
    _run("train_video")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["video_mlp"]["segments"] = "flatten"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match="takes 24 video inputs but the video features give 120"):
        _run("train_fusion")


def test_stage_error_is_one_line_without_traceback(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    out = run_stage("train_audio", tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: data/prepared/manifest.csv does not exist")
    assert "Traceback" not in out.stderr


def test_flip_variants_are_drawn_per_clip_per_epoch_and_only_in_training():
    """Training draws one variant per clip per epoch from a generator of its own: identical variants give
    exactly the run without variants (same batches, same weights); different variants change the training but
    never the test rows, which stay unflipped."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = np.arange(40) % 4
    xt, yt = x[:8], y[:8]

    def train(variants=None):
        set_determinism(0, 1)
        model = MLP(6, [8], 4, 0.0)
        history = train_head(model, x, y, xt, yt, epochs=3, lr=1e-2, batch_size=8, l1=0.0, seed=0,
                             variants_train=variants)
        return model.state_dict(), history

    plain, plain_history = train()
    same, same_history = train(np.repeat(x[:, None, :4], 4, axis=1))  # four identical variants of 4 columns
    assert all(torch.equal(plain[k], same[k]) for k in plain) and plain_history == same_history
    noisy = np.repeat(x[:, None, :4], 4, axis=1) + rng.normal(size=(40, 4, 4)).astype(np.float32)
    noisy[:, 0] = x[:, :4]
    varied, _ = train(noisy)
    assert not all(torch.equal(plain[k], varied[k]) for k in plain)
    again, _ = train(noisy)
    assert all(torch.equal(varied[k], again[k]) for k in varied)  # seeded: deterministic


def test_floats_as_dvc_writes_them_are_numbers_and_bad_values_one_line_errors(tmp_path, monkeypatch, capsys):
    """`dvc exp run -S fusion_mlp.l1=1.0e-5` leaves `l1: 1e-05` in params.yaml: a float in YAML 1.2, a string
    for PyYAML's YAML 1.1. The stages read it as the number it is."""
    from maivar.core.params import load_params

    _project(tmp_path, monkeypatch)
    text = (tmp_path / "params.yaml").read_text()
    text = text.replace("l1: 1.0e-05", "l1: 1e-05")
    assert "l1: 1e-05" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params()["fusion_mlp"]["l1"] == 1e-05
    _run("train_video")
    _run("train_audio", "train_fusion")
    assert text.index("lr: 0.003") < text.index("video_mlp:")  # the audio head's
    (tmp_path / "params.yaml").write_text(text.replace("lr: 0.003", "lr: fast", 1))
    capsys.readouterr()
    assert run_stage_in_process("train_audio", tmp_path) == 1
    assert capsys.readouterr().err.strip() == ('error: params.yaml audio_mlp.lr: "fast" is not allowed (a finite '
                                               'number > 0 and <= 10)')
