"""Resumable extraction: an interrupted run's finished batches are reused, and give the same output."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from maivar.audio.features import extract_audio_features
from maivar.core import rejections
from maivar.core.rejections import Rejection
from maivar.extraction.resume import Journal, file_identity
from maivar.video.features import extract_video_features

from test_audio_features import images as audio_images
from test_video_features import CPU, _clips


def _journal(tmp_path, identity=None, every_s=0.0):
    return Journal(tmp_path / "out.h5", identity or {"settings": 1}, every_s=every_s)


def test_journal_gives_back_the_prefix_of_finished_chunks(tmp_path):
    j = _journal(tmp_path)
    j.add(0, 2, [0, 1], np.ones((2, 3)), [])
    j.add(2, 4, [3], np.full((1, 3), 2.0), [Rejection("v2", rejections.DECODE_FAILED, "bad")])
    j.add(6, 8, [6], np.zeros((1, 3)), [])  # after a gap: never used
    done = _journal(tmp_path).load()
    assert done.stop == 4 and done.rows == [0, 1, 3]
    np.testing.assert_array_equal(np.concatenate(done.features), [[1, 1, 1], [1, 1, 1], [2, 2, 2]])
    assert done.rejected == [Rejection("v2", rejections.DECODE_FAILED, "bad")]


def test_journal_writes_every_so_often_and_on_demand(tmp_path):
    j = _journal(tmp_path, every_s=3600)
    j.add(0, 1, [0], np.ones((1, 2)), [])
    assert _journal(tmp_path).load().stop == 0  # not written yet
    j.write()
    assert _journal(tmp_path).load().stop == 1


def test_journal_of_other_inputs_or_settings_is_not_reused_and_is_removed(tmp_path, caplog):
    old = _journal(tmp_path, {"settings": 1})
    old.add(0, 1, [0], np.ones((1, 2)), [])
    with caplog.at_level(logging.INFO, logger="maivar.extraction.resume"):
        assert _journal(tmp_path, {"settings": 2}).load().stop == 0
    assert not old.dir.exists() and "other inputs or settings" in caplog.text


def test_an_unreadable_chunk_ends_the_prefix(tmp_path, caplog):
    j = _journal(tmp_path)
    j.add(0, 1, [0], np.ones((1, 2)), [])
    j.add(1, 2, [1], np.ones((1, 2)), [])
    (j.dir / "chunk-1-2.npz").write_bytes(b"not a zip")
    with caplog.at_level(logging.WARNING, logger="maivar.extraction.resume"):
        assert _journal(tmp_path).load().stop == 1
    assert "ignoring journal chunk chunk-1-2.npz" in caplog.text


def test_discard_removes_the_journal(tmp_path):
    j = _journal(tmp_path)
    j.add(0, 1, [0], np.ones((1, 2)), [])
    j.discard()
    assert not (tmp_path / "out.h5.partial").exists()


def test_file_identity_changes_when_the_file_is_rewritten(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"a")
    first = file_identity(path)
    path.write_bytes(b"bb")
    assert file_identity(path) != first and file_identity(tmp_path / "absent")[1:] == [None, None]


class _Interrupting(torch.nn.Module):
    """Wraps a model: the forward pass number ``after`` + 1 raises KeyboardInterrupt; counts the calls."""

    def __init__(self, model, after):
        super().__init__()
        self.model, self.after, self.calls = model, after, 0

    def _tick(self):
        self.calls += 1
        if self.after is not None and self.calls > self.after:
            raise KeyboardInterrupt

    def extract_feat(self, x, **kw):
        self._tick()
        return self.model.extract_feat(x, **kw)

    def forward(self, x):
        self._tick()
        return self.model(x)


def test_interrupted_video_extraction_resumes_and_gives_the_same_features(tiny_tsn, tmp_path):
    model, pre, _ = tiny_tsn
    clips = _clips(tmp_path)  # a, b, bad (rejected), c
    kwargs = dict(num_segments=4, pre=pre, device=CPU, timeout_s=30, progress=False, batch_videos=1, workers=1)
    rows, feats, rejected = extract_video_features(model, clips, **kwargs)

    first = _Interrupting(model, after=2)  # a and b done, interrupted at c
    with pytest.raises(KeyboardInterrupt):
        extract_video_features(first, clips, journal=_journal(tmp_path, every_s=3600), **kwargs)
    again = _Interrupting(model, after=None)
    rows2, feats2, rejected2 = extract_video_features(again, clips, journal=_journal(tmp_path), **kwargs)
    assert again.calls == 1  # a and b came from the journal; bad (rejected) and c were decoded again
    assert rows2 == rows == [0, 1, 3] and rejected2 == rejected
    assert np.array_equal(feats2, feats)


def test_interrupted_audio_extraction_resumes_and_gives_the_same_features(tmp_path):
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    rows = audio_images(7, seed=3)
    kwargs = dict(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=2, workers=0, device=CPU,
                  progress=False)
    expected = extract_audio_features(model, rows, **kwargs)
    first = _Interrupting(model, after=2)  # batches [0, 2) and [2, 4) done
    first.num_features = model.num_features
    with pytest.raises(KeyboardInterrupt):
        extract_audio_features(first, rows, journal=_journal(tmp_path, every_s=3600), **kwargs)
    again = _Interrupting(model, after=None)
    again.num_features = model.num_features
    out = extract_audio_features(again, rows, journal=_journal(tmp_path), **kwargs)
    assert again.calls == 2  # [4, 6) and [6, 7)
    assert np.array_equal(out, expected)
