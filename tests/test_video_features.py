"""TSN sampling, PyAV decoding, per-segment features through MMAction2, and the extract_video stage."""

from pathlib import Path

import av
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from maivar.core import rejections
from maivar.core.feature_store import open_store
from maivar.core.rejections import ClipFailure
from maivar.video.features import VideoClip, decode_clip, extract_video_features, frame_batches, pooled_segment_features
from maivar.video.frames import decode_segments, segment_centers
from maivar.video.tsn import build_tsn, preprocessing_from_config

from stage_cmd import run_stage, run_stage_in_process

ROOT = Path(__file__).resolve().parents[1]

CPU = torch.device("cpu")


def make_video(path: Path, n_frames: int, *, width: int = 64, height: int = 48, fps: int = 25, step: int = 8,
               color: bool = False) -> Path:
    """An MPEG-4 AVI whose frame i is flat grey at level 20 + step i (so a decoded frame tells its index);
    with ``color`` its red is that level, its green 255 - level and its blue half the level (so that a swap
    of the red and blue channels shows)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(n_frames):
            img = np.full((height, width, 3), 20 + step * i, dtype=np.uint8)
            if color:
                img[..., 1] = 255 - img[..., 0]
                img[..., 2] = img[..., 0] // 2
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode(path, num_segments=5, expected=None, short_side=40, crop=32):
    return decode_segments(str(path), num_segments=num_segments, expected_frames=expected, short_side=short_side,
                           crop_size=crop, timeout_s=30)


@pytest.mark.parametrize("num_frames", [1, 3, 7, 24, 25, 26, 100, 175, 301])
@pytest.mark.parametrize("num_segments", [1, 8, 25])
def test_segment_centers_match_mmaction2_sampleframes(num_frames, num_segments):
    from maivar.video.mmaction_compat import import_mmaction

    import_mmaction()
    from mmaction.datasets.transforms import SampleFrames

    sampler = SampleFrames(clip_len=1, frame_interval=1, num_clips=num_segments, test_mode=True)
    expected = sampler.transform({"total_frames": num_frames, "start_index": 0})["frame_inds"]
    assert segment_centers(num_frames, num_segments).tolist() == expected.tolist()


def test_segment_centers_are_segment_centers_and_handle_few_frames():
    assert segment_centers(175, 25).tolist() == [3 + 7 * i for i in range(25)]
    few = segment_centers(7, 25)
    assert len(few) == 25 and set(few.tolist()) == set(range(7)) and np.all(np.diff(few) >= 0)
    with pytest.raises(ValueError):
        segment_centers(0, 25)


def test_decode_takes_the_center_frames_resized_and_cropped(tmp_path):
    video = make_video(tmp_path / "v.avi", 20)
    frames = decode(video, num_segments=5, expected=20)
    assert isinstance(frames, np.ndarray) and frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    levels = frames.reshape(5, -1).mean(axis=1)
    expected = 20 + 8 * segment_centers(20, 5)
    assert np.all(np.abs(levels - expected) < 3), (levels, expected)


def test_a_wrong_or_unknown_frame_count_still_samples_the_decoded_frames(tmp_path):
    video = make_video(tmp_path / "v.avi", 20)
    right = decode(video, expected=20)
    for wrong in (None, 0, 30, 12):
        assert np.array_equal(decode(video, expected=wrong), right)


def test_fewer_frames_than_segments_and_other_resolutions(tmp_path):
    short = decode(make_video(tmp_path / "short.avi", 3, width=80, height=60), num_segments=8, expected=3)
    assert short.shape == (8, 32, 32, 3)
    levels = short.reshape(8, -1).mean(axis=1)
    assert np.all(np.abs(levels - (20 + 8 * segment_centers(3, 8))) < 3)
    tall = decode(make_video(tmp_path / "tall.avi", 10, width=48, height=96), expected=10)
    assert tall.shape == (5, 32, 32, 3)


def test_decode_failures_raise_a_clip_failure_with_a_reason(tmp_path):
    (tmp_path / "garbage.avi").write_bytes(b"\x00garbage" * 200)
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(ClipFailure) as missing:
        decode(tmp_path / "absent.avi")
    assert missing.value.reason == rejections.MISSING_FILE
    for name in ("garbage.avi", "empty.avi"):
        with pytest.raises(ClipFailure) as result:
            decode(tmp_path / name)
        assert result.value.reason in rejections.ALL and "\n" not in result.value.detail


def test_a_video_that_fails_mid_way_is_rejected(tmp_path):
    video = make_video(tmp_path / "v.avi", 40, step=5)
    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(ClipFailure) as result:
        decode(tmp_path / "cut.avi", expected=40)
    assert result.value.reason == rejections.DECODE_FAILED and result.value.detail


def test_per_segment_features_equal_the_backbone_plus_average_pool(tiny_tsn):
    model, _, _ = tiny_tsn
    x = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = pooled_segment_features(model, x)
        direct = model.backbone(x.reshape(6, 3, 32, 32)).mean(dim=(2, 3)).reshape(2, 3, -1)
        # the same map the recognizer's TSN head pools (before its consensus over segments)
        head_pool = model.cls_head.avg_pool(model.extract_feat(x, stage="backbone")[0]).flatten(1).reshape(2, 3, -1)
    assert ours.shape == (2, 3, 512)
    torch.testing.assert_close(ours, direct)
    torch.testing.assert_close(ours, head_pool)


def test_preprocessing_comes_from_the_config(tiny_tsn):
    _, pre, _ = tiny_tsn
    assert (pre.short_side, pre.crop_size) == (40, 32) and pre.mean[0] == pytest.approx(123.675)


def _clips(tmp_path):
    make_video(tmp_path / "a.avi", 12)
    make_video(tmp_path / "b.avi", 30, width=80, height=60)
    (tmp_path / "bad.avi").write_bytes(b"\x00" * 1000)
    make_video(tmp_path / "c.avi", 2)
    return [VideoClip("a", str(tmp_path / "a.avi"), 12), VideoClip("b", str(tmp_path / "b.avi"), 30),
            VideoClip("bad", str(tmp_path / "bad.avi"), 10), VideoClip("c", str(tmp_path / "c.avi"), 2)]


def test_extract_video_features_shapes_alignment_determinism(tiny_tsn, tmp_path):
    model, pre, _ = tiny_tsn
    clips = _clips(tmp_path)
    kwargs = dict(num_segments=4, pre=pre, device=CPU, timeout_s=30, progress=False)
    rows, feats, rejected = extract_video_features(model, clips, batch_videos=3, workers=1, **kwargs)
    assert rows == [0, 1, 3] and feats.shape == (3, 4, 512) and feats.dtype == np.float32
    assert [(r.id, r.reason) for r in rejected] == [("bad", rejections.DECODE_FAILED)]
    rows2, feats2, _ = extract_video_features(model, clips, batch_videos=3, workers=1, **kwargs)
    assert rows2 == rows and np.array_equal(feats, feats2)
    rows3, feats3, _ = extract_video_features(model, clips, batch_videos=1, workers=0, **kwargs)
    assert rows3 == rows
    np.testing.assert_allclose(feats3, feats, rtol=1e-4, atol=1e-5)  # batch composition does not matter
    # each video's features are those of its own frames
    frames = torch.from_numpy(decode(tmp_path / "b.avi", num_segments=4, expected=30))
    x = ((frames.float() - torch.tensor(pre.mean)) / torch.tensor(pre.std)).permute(0, 3, 1, 2)[None]
    with torch.inference_mode():
        alone = pooled_segment_features(model, x.contiguous())[0].numpy()
    np.testing.assert_allclose(feats[1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "pipes"])
def test_frame_batches_deliver_each_video_once_in_order(tmp_path, shared):
    """The feed of extract_video: batches of the decoded videos in order, the failures since the previous
    batch, the inputs each accounts for, one reused buffer; through shared memory or pickled, the same frames."""
    import functools

    clips = _clips(tmp_path)  # a, b, bad, c
    worker = functools.partial(decode_clip, num_segments=4, short_side=40, crop_size=32, timeout_s=30,
                               min_decoded_share=0.0)

    def batches(spans=None):
        return [(start, stop, rows, frames.clone(), [(i, f.reason) for i, f in failures])
                for start, stop, rows, frames, failures
                in frame_batches(worker, clips, frame_shape=(4, 32, 32, 3), batch_videos=2, workers=2,
                                 timeout_s=30, spans=spans, shared_memory=shared)]

    got = batches()
    assert [(start, stop, rows, failures) for start, stop, rows, _, failures in got] == [
        (0, 2, [0, 1], []), (2, 4, [3], [(2, rejections.DECODE_FAILED)])]
    for (_, _, rows, frames, _) in got:
        assert frames.dtype == torch.uint8 and frames.shape == (len(rows), 4, 32, 32, 3)
        for row, video in zip(rows, frames, strict=True):
            clip = clips[row]
            assert np.array_equal(video.numpy(), decode(clip.path, num_segments=4, expected=clip.expected_frames))
    # blocks (a rank's share, or what a journal left to do): a batch never spans two, one pool serves all
    blocks = batches([range(0, 1), range(2, 4)])
    assert [(start, stop, rows, failures) for start, stop, rows, _, failures in blocks] == [
        (0, 1, [0], []), (2, 4, [3], [(2, rejections.DECODE_FAILED)])]
    assert torch.equal(blocks[1][3], got[1][3])


def _stage_dir(tmp_path, config, manifest_rows):
    work = tmp_path / "work"
    (work / "data/prepared").mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["extract_video"].update(config=str(config), num_segments=3)
    params["runtime"].update(workers=1, device="cpu")
    params["runtime"]["extract_video"].update(batch_videos=2)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    pd.DataFrame(manifest_rows).to_csv(work / "data/prepared/manifest.csv", index=False)
    return work


def test_extract_video_stage_end_to_end(tiny_tsn, tmp_path):
    _, _, config = tiny_tsn
    clips = _clips(tmp_path)
    rows = [dict(id=c.id, class_name="X", label=k % 2, split="train", video_path=c.path, frames=c.expected_frames)
            for k, c in enumerate(clips)]
    work = _stage_dir(tmp_path, config, rows)
    proc = run_stage("extract_video", work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RANDOM" in proc.stderr and "WARNING" in proc.stderr
    store = open_store(work / "data/features/video.h5", "features")
    assert store.ids == ["a", "b", "c"] and store.labels.tolist() == [0, 1, 1]
    assert [(r.id, r.reason) for r in store.rejected] == [("bad", rejections.DECODE_FAILED)]
    assert set(store.ids) | {r.id for r in store.rejected} == {c.id for c in clips}
    assert store.data.shape == (3, 3, 512) and store.data.dtype == np.float32
    attrs = store.attrs
    assert attrs["weights"] == "random" and attrs["pretrained"] is False and len(attrs["weights_sha256"]) == 64
    settings = yaml.safe_load((work / "params.yaml").read_text())["extract_video"]
    assert {k: v for k, v in attrs.items() if k.startswith("extract_video.")} == {
        f"extract_video.{k}": ("null" if v is None else v) for k, v in settings.items()}  # every setting
    assert attrs["extract_video.num_segments"] == 3 and "num_segments" not in attrs and "config" not in attrs
    assert attrs["crop_size"] == 32 and attrs["short_side"] == 40 and attrs["device"] == "cpu"
    assert attrs["dtype"] == "float32" and attrs["conv_bn_folded"] == 20  # ResNet-18: every conv has a BN
    assert attrs["backbone"] == "ResNet" and attrs["backbone_depth"] == 18
    assert "channel_order" not in attrs  # recorded only when it is not RGB: RGB configs' outputs are unchanged


def test_extract_video_stage_missing_checkpoint_and_interruption(tiny_tsn, tmp_path, monkeypatch, capsys, caplog):
    """In this process (the end-to-end test above runs the stage as DVC does)."""
    from maivar.core import feature_store

    _, _, config = tiny_tsn
    clips = _clips(tmp_path)
    rows = [dict(id=c.id, label=0, video_path=c.path, frames=c.expected_frames) for c in clips]
    work = _stage_dir(tmp_path, config, rows)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["extract_video"]["checkpoint"] = "nowhere/tsn.pth"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    capsys.readouterr()
    assert run_stage_in_process("extract_video", work) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()]  # one line, no traceback
    assert err.startswith("error: extract_video.checkpoint nowhere/tsn.pth does not exist")  # stage weights_video
    assert "place the checkpoint at nowhere/tsn.pth" in err
    # Interrupted while writing: no output, no temporary left behind.
    params["extract_video"]["checkpoint"] = None
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    with monkeypatch.context() as m:
        m.setattr(feature_store.StoreWriter, "finish", _interrupt)
        assert run_stage_in_process("extract_video", work) == 130
    # no output, no temporary: only the journal of the finished batches (maivar.extraction.resume)
    assert [p.name for p in (work / "data/features").iterdir()] == ["video.h5.partial"]
    with pytest.raises(FileNotFoundError):
        h5py.File(work / "data/features/video.h5", "r")
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run_stage_in_process("extract_video", work) == 0
    assert "resuming: 4 of 4 videos were done by an interrupted run" in caplog.text
    assert [p.name for p in (work / "data/features").iterdir()] == ["video.h5"]
    resumed = open_store(work / "data/features/video.h5", "features")
    (work / "data/features/video.h5").unlink()
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run_stage_in_process("extract_video", work) == 0
    assert "resuming" not in caplog.text
    fresh = open_store(work / "data/features/video.h5", "features")
    assert fresh.ids == resumed.ids and fresh.rejected == resumed.rejected
    assert np.array_equal(fresh.data, resumed.data)


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("config,sizes,dim,order", [
    ("tsn_r50_video.py", (256, 224), 2048, "RGB"),
    ("tsn_r50_video_112.py", (128, 112), 2048, "RGB"),
    ("tsn_bninception_video.py", (256, 224), 1024, "BGR"),  # the paper's backbone: BGR frames, Caffe's mean
])
def test_configs_match_mmaction2_standard_test_pipeline(tmp_path, config, sizes, dim, order):
    """Each shipped config on a 320x240 color video: our route (PyAV decoding, our sampling, resize and crop,
    channel order, normalization, batching) gives MMAction2's own test-pipeline features (its decoder, its
    ActionDataPreprocessor). 3 segments keep it cheap; the sampling rule for any number of segments is checked
    against SampleFrames above."""
    import dataclasses

    from mmengine.dataset import Compose, pseudo_collate

    segments = 3
    video = make_video(tmp_path / "v.avi", 50, width=320, height=240, step=4, color=True)
    model, _, cfg = build_tsn(ROOT / "configs" / config, checkpoint=None, seed=0)
    pre = preprocessing_from_config(cfg)
    assert (pre.short_side, pre.crop_size, pre.channel_order) == (*sizes, order)
    clips = [VideoClip("v", str(video), 50)]
    kwargs = dict(num_segments=segments, batch_videos=1, workers=1, device=CPU, timeout_s=60, progress=False)
    rows, ours, _ = extract_video_features(model, clips, pre=pre, **kwargs)
    assert rows == [0] and ours.shape == (1, segments, dim)
    steps = [dict(s, num_clips=segments) if s["type"] == "SampleFrames" else s for s in cfg.test_pipeline]
    data = Compose(steps)(dict(filename=str(video), label=-1, start_index=0, modality="RGB"))
    with torch.inference_mode():
        batch = model.data_preprocessor(pseudo_collate([data]), False)
        feats, _ = model.extract_feat(batch["inputs"], stage="backbone")
    reference = feats.mean(dim=(2, 3)).reshape(1, segments, -1).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-4 * np.abs(reference).max())
    if order != "RGB":  # the video's colors make the channel order matter: RGB frames would not match
        _, unswapped, _ = extract_video_features(model, clips, pre=dataclasses.replace(pre, channel_order="RGB"),
                                                 **kwargs)
        assert not np.allclose(unswapped, reference, rtol=1e-3, atol=1e-4 * np.abs(reference).max())


def test_out_of_memory_halves_the_batch_and_goes_on(tiny_tsn, tmp_path, monkeypatch):
    import maivar.video.features as vf

    model, pre, _ = tiny_tsn
    clips = _clips(tmp_path)
    kwargs = dict(num_segments=2, pre=pre, workers=0, device=CPU, timeout_s=30, progress=False)
    rows, feats, _ = extract_video_features(model, clips, batch_videos=3, **kwargs)
    real = vf.pooled_segment_features
    sizes = []

    def tight_memory(m, x):
        sizes.append(len(x))
        if len(x) > 1:
            raise torch.cuda.OutOfMemoryError("fake: out of memory")
        return real(m, x)

    monkeypatch.setattr(vf, "pooled_segment_features", tight_memory)
    rows2, feats2, _ = extract_video_features(model, clips, batch_videos=3, **kwargs)
    assert rows2 == rows and max(sizes) > 1 and sizes[-1] == 1
    np.testing.assert_allclose(feats2, feats, rtol=1e-4, atol=1e-5)
