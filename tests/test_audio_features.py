"""Audio images -> pooled timm features, and the extract_audio stage (tiny models, tiny images)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from maivar.audio.backbone import IMAGENET_MEAN, IMAGENET_STD, create_audio_backbone, normalization
from maivar.audio.features import FLIPS, authors_flips, extract_audio_features, flipped, preprocess
from maivar.core import rejections
from maivar.core.feature_store import LazyRows, create_store, open_store
from maivar.core.rejections import Rejection
from maivar.heads.join import load_features
from maivar.settings.base import SettingsError
from maivar.settings.extract import ExtractAudioSettings

from stage_cmd import run_stage, run_stage_in_process

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def images(n: int, size: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def resnet18():
    model, _ = create_audio_backbone("resnet18", pretrained=False, checkpoint=None, seed=0)
    return model


def run(model, rows, batch_size=4, workers=0, input_size=32):
    return extract_audio_features(model, rows, input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                  batch_size=batch_size, workers=workers, device=CPU, progress=False)


def test_features_shape_dtype_order_and_determinism(resnet18):
    rows = images(5)
    feats = run(resnet18, rows)
    assert feats.shape == (5, 512) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.array_equal(feats, run(resnet18, rows))
    np.testing.assert_allclose(run(resnet18, rows, batch_size=1), feats, rtol=1e-4, atol=1e-5)
    # rows stay in input order: reversing the input reverses the output
    np.testing.assert_allclose(run(resnet18, rows[::-1].copy(), batch_size=2), feats[::-1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(feats[0], feats[1])


def test_flip_variants_are_the_features_of_the_flipped_images(resnet18):
    """extract_audio.flips: N x 4 x D, variants in FLIPS order; each equals the features of the image flipped
    beforehand, and variant 0 those of the image as drawn."""
    rows = images(3, seed=4)
    feats = extract_audio_features(resnet18, rows, input_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                   batch_size=2, workers=0, device=CPU, progress=False, flips=True)
    assert feats.shape == (3, 4, 512) and FLIPS == ("none", "horizontal", "vertical", "both")
    flipped = {"none": rows, "horizontal": rows[:, :, ::-1], "vertical": rows[:, ::-1], "both": rows[:, ::-1, ::-1]}
    for k, name in enumerate(FLIPS):
        np.testing.assert_allclose(feats[:, k], run(resnet18, flipped[name].copy()), rtol=1e-4, atol=1e-5)
    assert not np.allclose(feats[:, 0], feats[:, 1])  # a flip changes what the backbone sees


def test_preprocess_resizes_and_normalizes():
    x = torch.full((2, 24, 24, 3), 255, dtype=torch.uint8)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    out = preprocess(x, input_size=40, mean=mean, std=std)
    assert out.shape == (2, 3, 40, 40)
    torch.testing.assert_close(out[:, :, 0, 0], ((1 - mean) / std).expand(2, 3))


def test_normalization_choices(resnet18):
    assert normalization(resnet18, "imagenet") == (IMAGENET_MEAN, IMAGENET_STD)
    irv2_like = type("M", (), {"pretrained_cfg": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}})()
    assert normalization(irv2_like, "model") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        normalization(resnet18, "other")


def test_reads_from_a_store_in_dataloader_workers(resnet18, tmp_path):
    rows = images(6, seed=1)
    with create_store(tmp_path / "images.h5", data_name="images", n=6, item_shape=rows.shape[1:], dtype=np.uint8) as w:
        w.write_rows(0, rows)
        w.finish([f"v{i}" for i in range(6)], [0] * 6, [], {})
    lazy = LazyRows(tmp_path / "images.h5", "images")
    np.testing.assert_allclose(run(resnet18, lazy, batch_size=4, workers=2), run(resnet18, rows), rtol=1e-4, atol=1e-5)


def _stage_dir(tmp_path, rows, ids, labels, rejected):
    work = tmp_path / "work"
    (work / "data/audio_images").mkdir(parents=True)
    with create_store(work / "data/audio_images/images.h5", data_name="images", n=len(rows),
                      item_shape=rows.shape[1:], dtype=np.uint8) as w:
        w.write_rows(0, rows)
        w.finish(ids, labels, rejected, {"representation": "mfcc"})
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["extract_audio"].update(backbone="resnet18", input_size=32, pretrained=False, checkpoint=None)
    params["runtime"].update(workers=1, device="cpu")
    params["runtime"]["extract_audio"].update(batch_size=2)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


def test_extract_audio_stage_end_to_end(tmp_path):
    rows = images(3, seed=2)
    rejected = [Rejection("v_missing", rejections.SILENT_AUDIO, "peak -90 dBFS")]
    work = _stage_dir(tmp_path, rows, ["v_a", "v_b", "v_c"], [2, 0, 1], rejected)
    proc = run_stage("extract_audio", work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WARNING" in proc.stderr and "RANDOM" in proc.stderr
    store = open_store(work / "data/features/audio.h5", "features")
    assert store.ids == ["v_a", "v_b", "v_c"] and store.labels.tolist() == [2, 0, 1]
    assert store.rejected == rejected
    assert store.data.shape == (3, 512) and store.data.dtype == np.float32
    attrs = store.attrs
    # every setting as extract_audio.<key>, and what was derived from them
    settings = yaml.safe_load((work / "params.yaml").read_text())["extract_audio"]
    assert {k: v for k, v in attrs.items() if k.startswith("extract_audio.")} == {
        f"extract_audio.{k}": ("null" if v is None else v) for k, v in settings.items()}
    assert attrs["extract_audio.backbone"] == "resnet18" and attrs["extract_audio.input_size"] == 32
    assert "backbone" not in attrs and "input_size" not in attrs and "normalization" not in attrs  # not twice
    assert attrs["representation"] == "mfcc" and attrs["mean"] == "[0.485, 0.456, 0.406]" and attrs["device"] == "cpu"
    assert attrs["weights"] == "random" and attrs["pretrained"] is False and len(attrs["weights_sha256"]) == 64
    assert attrs["conv_bn_folded"] == 20  # resnet18: every conv has a BN


def test_extract_audio_stage_with_flips_records_them_and_the_heads_read_them(tmp_path):
    rows = images(3, seed=2)
    work = _stage_dir(tmp_path, rows, ["v_a", "v_b", "v_c"], [0, 1, 0], [])
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["extract_audio"]["flips"] = True
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage_in_process("extract_audio", work) == 0
    store = open_store(work / "data/features/audio.h5", "features")
    assert store.data.shape == (3, 4, 512) and store.attrs["flips"] == '["none", "horizontal", "vertical", "both"]'
    manifest = pd.DataFrame({"id": ["v_a", "v_b", "v_c"], "class_name": ["A", "B", "A"], "label": [0, 1, 0],
                             "split": ["train", "train", "test"]}).set_index("id", drop=False)
    features = load_features(work / "data/features/audio.h5", manifest, "audio")
    assert features.x.shape == (3, 512) and features.variants.shape == (3, 4, 512)
    assert np.array_equal(features.x, store.data[:, 0])  # the unflipped variant is the one evaluated


def test_authors_flips_are_one_seeded_draw_per_clip():
    """flips: authors: a fair coin for each flip of each clip, fixed by the seed and the clip's id alone."""
    ids = [f"v_{i:04d}" for i in range(800)]
    codes = authors_flips(ids, seed=0)
    assert codes.shape == (800,) and np.array_equal(codes, authors_flips(ids, seed=0))
    assert np.array_equal(authors_flips(ids[::-1], seed=0), codes[::-1])  # the id decides, not the position
    assert (codes != authors_flips(ids, seed=1)).mean() > 0.6  # another seed, other draws (3/4 expected)
    assert np.all(np.abs(np.bincount(codes, minlength=4) / 800 - 0.25) < 0.06)  # the four outcomes equally likely
    image = images(1)[0]
    assert np.array_equal(flipped(image, FLIPS.index("both")), image[::-1, ::-1])
    assert np.array_equal(flipped(image, FLIPS.index("horizontal")), image[:, ::-1])


def test_extract_audio_stage_with_authors_flips_flips_every_image_once(tmp_path, resnet18):
    ids = ["v_a", "v_b", "v_c", "v_d", "v_e", "v_f"]
    rows = images(len(ids), seed=5)
    work = _stage_dir(tmp_path, rows, ids, [0, 1, 0, 1, 0, 1], [])
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["extract_audio"]["flips"] = "authors"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage_in_process("extract_audio", work) == 0
    store = open_store(work / "data/features/audio.h5", "features")
    assert store.data.shape == (6, 512) and store.attrs["extract_audio.flips"] == "authors"
    assert "flips" not in store.attrs  # not the four variants
    assert ExtractAudioSettings.from_attrs(store.attrs).flips == "authors"
    codes = authors_flips(ids, params["extract_audio"]["seed"])
    assert len(set(codes.tolist())) > 1  # this draw flips some images and not others
    expected = np.stack([flipped(r, c) for r, c in zip(rows, codes, strict=True)])
    np.testing.assert_allclose(store.data, run(resnet18, expected, batch_size=2), rtol=1e-4, atol=1e-5)
    manifest = pd.DataFrame({"id": ids, "class_name": ["A", "B"] * 3, "label": [0, 1] * 3,
                             "split": ["train"] * 4 + ["test"] * 2}).set_index("id", drop=False)
    features = load_features(work / "data/features/audio.h5", manifest, "audio")
    assert features.variants is None and np.array_equal(features.x, store.data)  # test rows flipped too


@pytest.mark.parametrize("value, ok", [(False, True), (True, True), ("authors", True), ("true", False),
                                       ("Authors", False), (1, False)])
def test_flips_setting_is_false_true_or_authors(value, ok):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["extract_audio"]
    if ok:
        assert ExtractAudioSettings.from_mapping({**params, "flips": value}).flips == value
        return
    with pytest.raises(SettingsError, match="flips: .* is not allowed \\(false, true or authors"):
        ExtractAudioSettings.from_mapping({**params, "flips": value})


def test_extract_audio_stage_errors_and_interruption(tmp_path, monkeypatch, capsys, caplog):
    """In this process (the end-to-end test above runs the stage as DVC does): a one-line error, an interrupted
    run resumed from its journal, the same output as a fresh run."""
    from maivar.core import feature_store

    work = _stage_dir(tmp_path, images(2), ["v_a", "v_b"], [0, 1], [])
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["extract_audio"]["checkpoint"] = "ckpt/absent.pt"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    capsys.readouterr()
    assert run_stage_in_process("extract_audio", work) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()]  # one line, no traceback
    assert err.startswith("error: extract_audio.checkpoint ckpt/absent.pt does not exist")  # stage weights_audio
    assert "place the checkpoint at ckpt/absent.pt" in err
    params["extract_audio"]["checkpoint"] = None
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    with monkeypatch.context() as m:  # interrupted (Ctrl-C) while writing the store
        m.setattr(feature_store.StoreWriter, "write_rows", _interrupt)
        assert run_stage_in_process("extract_audio", work) == 130
    # no output, no temporary: only the journal of the finished batches (maivar.extraction.resume)
    assert [p.name for p in (work / "data/features").iterdir()] == ["audio.h5.partial"]
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run_stage_in_process("extract_audio", work) == 0
    assert "resuming: 2 of 2 images were done by an interrupted run" in caplog.text
    assert [p.name for p in (work / "data/features").iterdir()] == ["audio.h5"]
    resumed = open_store(work / "data/features/audio.h5", "features").data
    (work / "data/features/audio.h5").unlink()
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run_stage_in_process("extract_audio", work) == 0
    assert "resuming" not in caplog.text
    assert np.array_equal(open_store(work / "data/features/audio.h5", "features").data, resumed)
    # missing input: one line
    (work / "data/audio_images/images.h5").unlink()
    capsys.readouterr()
    assert run_stage_in_process("extract_audio", work) == 1
    assert capsys.readouterr().err.startswith("error: data/audio_images/images.h5 does not exist")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_bf16_precision_is_close_to_fp32_and_recorded(resnet18, tmp_path, monkeypatch, caplog):
    """extract_*.precision: bf16 autocast (native on this CPU when it has AVX512-BF16/AMX, emulated and warned
    about elsewhere); features within bf16 rounding of fp32's; the store's dtype attribute says which."""
    from maivar.extraction import inference

    rows = images(4, seed=5)
    fp32 = run(resnet18, rows)
    bf16 = extract_audio_features(resnet18, rows, input_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                  batch_size=4, workers=0, device=CPU, progress=False, precision="bf16")
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(fp32, bf16)
    work = _stage_dir(tmp_path, rows, ["v_a", "v_b", "v_c", "v_d"], [0, 1, 0, 1], [])
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["extract_audio"]["precision"] = "bf16"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(inference, "native_bf16", lambda device: False)
    with caplog.at_level("WARNING"):
        assert run_stage_in_process("extract_audio", work) == 0
    assert "bf16 on a CPU without native bf16 is emulated" in caplog.text
    assert open_store(work / "data/features/audio.h5", "features").attrs["dtype"] == "bfloat16-autocast"
    params["extract_audio"]["precision"] = "fp16"
    with pytest.raises(SettingsError, match=r'^params.yaml extract_audio.precision: "fp16" is not allowed '
                                            r'\(one of "fp32", "bf16"\)'):
        ExtractAudioSettings.from_params(params)
