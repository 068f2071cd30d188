"""Stage weights (maivar/extraction/weights.py): each backbone's weights as a file DVC tracks; the known sources
(maivar/extraction/sources.py) and ``maivar weights list|fetch|verify``."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from maivar.audio.backbone import build_audio_backbone
from maivar.cli import main as cli
from maivar.core.errors import PipelineError
from maivar.extraction.checkpoints import Weights, state_dict_sha256
from maivar.extraction.sources import KNOWN, KnownWeights, fetch
from maivar.extraction.weights import (
    WeightsRequest,
    audio_weights_request,
    load_weights_file,
    read_meta,
    resolve_weights,
    timm_source,
    verify_weights_file,
)
from maivar.settings.extract import ExtractAudioSettings

from stage_cmd import run_stage_in_process, stage_path
from test_backbones import write_tiny_tsn

ROOT = Path(__file__).resolve().parents[1]
AUDIO = stage_path("weights_audio", "weights")
VIDEO = stage_path("weights_video", "weights")


def linear_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return nn.Linear(3, 2).state_dict()


def builder(calls: list):
    """A weights builder over a tiny Linear: the checkpoint's tensors, or seeded ones (counts its calls)."""
    def build(request: WeightsRequest):
        calls.append(request)
        if request.checkpoint:
            from safetensors.torch import load_file

            state = load_file(request.checkpoint)
            return state, Weights(f"checkpoint:{request.checkpoint}", True, state_dict_sha256(state))
        state = linear_state(request.seed)
        return state, Weights("random", False, state_dict_sha256(state))
    return build


def save_checkpoint(path: Path, seed: int) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(linear_state(seed), str(path))
    return path


def request(checkpoint: str | None = None, seed: int | None = 0) -> WeightsRequest:
    return WeightsRequest("audio", "tiny_linear", None, False, checkpoint, None if checkpoint else seed)


def test_random_weights_are_written_once_deterministically_and_kept(tmp_path, caplog):
    calls = []
    a, b = tmp_path / "a/audio.safetensors", tmp_path / "b/audio.safetensors"
    assert resolve_weights(a, request(), builder(calls)) is True
    assert resolve_weights(b, request(), builder(calls)) is True
    assert a.read_bytes() == b.read_bytes()  # one sorted metadata entry: the same bytes every time
    inode, mtime = a.stat().st_ino, a.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert resolve_weights(a, request(), builder(calls)) is False  # current: not rebuilt, not rewritten
    assert len(calls) == 2 and (a.stat().st_ino, a.stat().st_mtime_ns) == (inode, mtime)
    assert "is current" in caplog.text
    assert resolve_weights(a, request(seed=1), builder(calls)) is True  # another seed: other weights
    assert a.read_bytes() != b.read_bytes() and len(calls) == 3
    meta = read_meta(a)
    assert meta["request"]["seed"] == 1 and meta["origin"] == "random" and meta["source"] == "random"


def test_a_checkpoint_replaced_in_place_is_rewritten_and_an_absent_one_kept_on_the_files_word(tmp_path, caplog):
    calls = []
    ckpt = save_checkpoint(tmp_path / "ckpt/w.safetensors", seed=1)
    out = tmp_path / "data/weights/audio.safetensors"
    req = request(str(ckpt))
    assert resolve_weights(out, req, builder(calls)) is True
    first = out.read_bytes()
    assert read_meta(out)["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert resolve_weights(out, req, builder(calls)) is False and len(calls) == 1
    save_checkpoint(ckpt, seed=2)  # same path, other weights
    with caplog.at_level(logging.INFO):
        assert resolve_weights(out, req, builder(calls)) is True
    assert "changed (sha256" in caplog.text and out.read_bytes() != first and len(calls) == 2
    # a clone that pulled data/weights but has no checkpoint: the file is kept, and the log says so
    ckpt.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert resolve_weights(out, req, builder(calls)) is False
    assert "is not on this machine: keeping" in caplog.text and len(calls) == 2
    # no file and no checkpoint: one line naming the file to place and where
    out.unlink()
    with pytest.raises(PipelineError) as err:
        resolve_weights(out, req, builder(calls))
    assert str(ckpt) in str(err.value) and "place the checkpoint at" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_reader_refuses_a_missing_foreign_stale_or_altered_file(tmp_path):
    out = tmp_path / "audio.safetensors"
    model = nn.Linear(3, 2)
    with pytest.raises(PipelineError, match="missing or is not a maivar weights file"):
        load_weights_file(out, request(), model)
    save_checkpoint(out, seed=0)  # a safetensors file, but no maivar metadata
    with pytest.raises(PipelineError, match="not a maivar weights file"):
        load_weights_file(out, request(), model)
    out.unlink()
    resolve_weights(out, request(seed=0), builder([]))
    with pytest.raises(PipelineError, match=r"other settings \(\(seed\)\).*dvc repro"):
        load_weights_file(out, request(seed=5), model)
    weights = load_weights_file(out, request(seed=0), model)
    assert weights == Weights("random", False, state_dict_sha256(linear_state(0)))
    assert torch.equal(model.weight, linear_state(0)["weight"])
    # one tensor altered after the stage wrote the file (same length, so the header still parses)
    raw = bytearray(out.read_bytes())
    raw[-1] ^= 0xFF
    out.write_bytes(bytes(raw))
    with pytest.raises(PipelineError, match="altered"):
        load_weights_file(out, request(seed=0), model)
    ok, message = verify_weights_file(out, request(seed=0))
    assert not ok and "altered" in message


def test_timm_weights_are_found_in_timms_cache_by_tag_without_network(tmp_path, monkeypatch):
    """pretrained: true resolves through the Hugging Face cache (timm's), by the model's default tag: the cached
    file and its sha256, or nothing when the cache lacks it (then the stage keeps a matching file or says where
    to get one)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    absent = timm_source("resnet18")
    assert absent.ident == "timm:timm/resnet18.a1_in1k" and absent.file is None
    import huggingface_hub.constants as hub

    snapshot = tmp_path / "models--timm--resnet18.a1_in1k/snapshots/0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "models--timm--resnet18.a1_in1k/refs").mkdir()
    (tmp_path / "models--timm--resnet18.a1_in1k/refs/main").write_text("0123abcd")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    found = timm_source("resnet18")
    assert found.file == str(snapshot / "model.safetensors")
    assert found.sha256 == hashlib.sha256(b"weights").hexdigest()
    other_tag = timm_source("resnet18.tv_in1k")  # another tag is another source
    assert other_tag.ident == "timm:timm/resnet18.tv_in1k" and other_tag.file is None
    settings = ExtractAudioSettings.from_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    req = audio_weights_request(settings)
    assert req.kind == "random" and req.seed == settings.seed


def test_weights_stage_writes_both_files_and_extract_audio_loads_the_same_model(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["extract_audio"].update(backbone="resnet18", pretrained=False, checkpoint=None, seed=3)
    params["extract_video"]["config"] = str(write_tiny_tsn(tmp_path / "tsn.py"))
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage_in_process("weights_audio", work) == 0 and run_stage_in_process("weights_video", work) == 0
    audio, video = read_meta(work / AUDIO), read_meta(work / VIDEO)
    assert audio["request"] == {"modality": "audio", "architecture": "resnet18", "architecture_sha256": None,
                                "pretrained": False, "checkpoint": None, "seed": 3}
    assert video["request"]["modality"] == "video" and len(video["request"]["architecture_sha256"]) == 64
    settings = ExtractAudioSettings.from_params(params)
    from_file = build_audio_backbone(settings, torch.device("cpu"), weights_file=str(work / AUDIO))
    direct = build_audio_backbone(settings, torch.device("cpu"))
    assert from_file.weights == direct.weights  # the store records the same source and sha256 as before
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(from_file.model(x), direct.model(x))
    mtimes = [(work / p).stat().st_mtime_ns for p in (AUDIO, VIDEO)]
    assert run_stage_in_process("weights_audio", work) == 0 and run_stage_in_process("weights_video", work) == 0
    assert [(work / p).stat().st_mtime_ns for p in (AUDIO, VIDEO)] == mtimes  # nothing changed: both untouched
    (work / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())  # verify finds the files' paths there
    assert cli(["weights", "verify", "--root", str(work)]) == 0
    params["extract_audio"]["seed"] = 4
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert cli(["weights", "verify", "--root", str(work)]) == 1


def test_fetch_streams_checks_the_published_sha256_and_keeps_nothing_that_fails(tmp_path, capsys):
    served = tmp_path / "served/tsn.pth"
    served.parent.mkdir()
    served.write_bytes(b"\x00checkpoint bytes" * 1000)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    good = KnownWeights("t", "video", "test", served.as_uri(), digest[:8], "test", (("extract_video.checkpoint",
                                                                                      "{file}"),))
    path, got = fetch(good, tmp_path / "weights", progress=False)
    assert got == digest and path.read_bytes() == served.read_bytes() and path.name == "t.pth"
    bad = KnownWeights("u", "video", "test", served.as_uri(), "deadbeef", "test", ())
    with pytest.raises(PipelineError, match="does not start with the published deadbeef"):
        fetch(bad, tmp_path / "weights", progress=False)
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["t.pth"]  # no partial or bad file
    offline = KnownWeights("v", "video", "test", "http://127.0.0.1:9/none.pth", None, "test", ())
    with pytest.raises(PipelineError, match=r"cannot download .* place it at .*v\.pth"):
        fetch(offline, tmp_path / "weights", timeout=5, progress=False)
    assert cli(["weights", "fetch", "no-such-weights"]) == 2
    assert cli(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    for known in KNOWN.values():
        assert known.name in listed and known.url in listed and known.licence in listed
    assert "cd10898e... (the prefix the file name publishes)" in listed


def test_timm_weights_not_in_the_cache_offline_are_one_line(tmp_path, monkeypatch):
    """pretrained: true with nothing in timm's cache and no network: timm is asked (it downloads where it can),
    and its failure is one line that says what to do; nothing is written."""
    import huggingface_hub.constants as hub

    from maivar.audio.backbone import build_audio_weights

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    out = tmp_path / "audio.safetensors"
    with pytest.raises(PipelineError, match="timm cannot load pretrained weights for resnet18") as err:
        resolve_weights(out, WeightsRequest("audio", "resnet18", None, True, None, None), build_audio_weights)
    assert "\n" not in str(err.value) and not out.exists()
