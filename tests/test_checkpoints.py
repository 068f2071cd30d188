"""Checkpoint files as users have them: mmengine runner checkpoints, timm/DDP/compiled/safetensors weights,
malicious pickles that must not run, and one-line errors for every file that cannot be used.

Every file is written by the library that makes such files (mmengine's save_checkpoint with a real
MessageHub and OptimWrapper, timm's CheckpointSaver and save_for_hf, safetensors' save_file, torch.save of
wrapped models), then loaded the way the pipeline loads it.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shlex
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch
from torch import nn

from maivar.audio.backbone import create_audio_backbone
from maivar.core.errors import PipelineError
from maivar.extraction.checkpoints import load_state_dict_file, weights_sha256
from maivar.video.tsn import build_tsn

from test_backbones import write_tiny_tsn

AUDIO = "mobilenetv3_small_050"  # a small timm model: ~0.6 M parameters


# ------------------------------------------------------------------------------------ mmengine runner checkpoints


def _mmengine_runner_checkpoint(model: nn.Module, cfg, *, extra_meta: dict | None = None) -> dict:
    """What mmengine's ``Runner.save_checkpoint`` puts in a checkpoint, made by mmengine's own classes: a real
    MessageHub (HistoryBuffer scalars, numpy values), an OptimWrapper after one SGD step (momentum buffers),
    a MultiStepLR scheduler, and ``meta`` with numpy scalars as a runner records them."""
    import mmengine
    from mmengine.logging import MessageHub
    from mmengine.optim import MultiStepLR, OptimWrapper
    from mmengine.runner.checkpoint import weights_to_cpu
    from mmengine.utils import apply_to

    hub = MessageHub.get_instance(f"maivar-test-{time.monotonic_ns()}")
    for i in range(3):
        hub.update_scalar("train/loss", np.float64(1.0 / (i + 1)))
        hub.update_scalar("train/lr", 0.01)
    hub.update_info("iter", 3)
    hub.update_info("epoch", np.int64(1))
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    scheduler = MultiStepLR(optim, milestones=[2], by_epoch=True)
    model.train()
    model.backbone(torch.randn(2, 3, 32, 32)).sum().backward()
    optim.step()
    optim.zero_grad()
    model.eval()
    meta = dict(epoch=1, iter=3, cfg=cfg.pretty_text, seed=np.int64(0), experiment_name="tiny_tsn",
                time=time.strftime("%Y%m%d_%H%M%S"), mmengine_version=mmengine.__version__,
                dataset_meta=dict(classes=("a", "b")), best_acc=np.float64(0.5), dtype=np.dtype("float32"))
    meta.update(extra_meta or {})
    return {
        "meta": meta,
        "state_dict": weights_to_cpu(model.state_dict()),
        "message_hub": apply_to(hub.state_dict(), lambda x: hasattr(x, "cpu"), lambda x: x.cpu()),
        "optimizer": apply_to(optim.state_dict(), lambda x: hasattr(x, "cpu"), lambda x: x.cpu()),
        "param_schedulers": [scheduler.state_dict()],
    }


@pytest.fixture(scope="module")
def tsn_donor(tmp_path_factory):
    """(config of a 5-class tiny TSN, a 101-class TSN trained one step, its config): the checkpoint's head
    has another number of classes than the config that loads it."""
    root = tmp_path_factory.mktemp("tsn")
    config = write_tiny_tsn(root / "tsn.py")
    donor, _, donor_cfg = build_tsn(write_tiny_tsn(root / "tsn101.py", classes=101), checkpoint=None, seed=5)
    return config, donor, donor_cfg


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_mmengine_runner_checkpoint_loads_through_build_tsn(tmp_path, tsn_donor, layout, caplog):
    from mmengine.runner.checkpoint import save_checkpoint

    config, donor, donor_cfg = tsn_donor
    checkpoint = _mmengine_runner_checkpoint(donor, donor_cfg)
    path = tmp_path / "epoch_1.pth"
    if layout == "zip":
        save_checkpoint(checkpoint, str(path))  # mmengine's own saving (torch.save underneath)
    else:  # what torch < 1.6 wrote: old MMAction2 model-zoo files
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    with pytest.raises(Exception, match="HistoryBuffer|numpy"):  # open-mmlab/mmengine#1655: the plain load fails
        torch.load(path, weights_only=True)
    with caplog.at_level(logging.INFO, logger="maivar.extraction.checkpoints"):
        model, weights, _ = build_tsn(config, checkpoint=str(path), seed=0)
    assert weights.source == f"checkpoint:{path}" and weights.pretrained
    assert weights.sha256 == weights_sha256(donor.backbone)
    assert "mmengine.logging.history_buffer.HistoryBuffer" in caplog.text  # named as not loaded
    for name, tensor in donor.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor)


def test_numpy_scalars_in_meta_are_real_and_mmengine_objects_inert(tmp_path, tsn_donor):
    from mmengine.runner.checkpoint import save_checkpoint

    from maivar.extraction.checkpoints import NotLoaded, _load_pickle_safely

    _, donor, donor_cfg = tsn_donor
    save_checkpoint(_mmengine_runner_checkpoint(donor, donor_cfg), str(tmp_path / "ck.pth"))
    obj, not_loaded = _load_pickle_safely(tmp_path / "ck.pth")
    assert type(obj["meta"]["best_acc"]) is np.float64 and obj["meta"]["best_acc"] == 0.5
    assert obj["meta"]["seed"] == 0 and obj["meta"]["dtype"] == np.dtype("float32")
    buffer = obj["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, NotLoaded) and buffer.pickled_name == "mmengine.logging.history_buffer.HistoryBuffer"
    assert "mmengine.logging.history_buffer.HistoryBuffer" in not_loaded


# ------------------------------------------------------------------------------------ malicious pickles


def _marker_payloads(marker) -> dict:
    """Objects whose unpickling would create ``marker``, each by another route."""
    code = f"open({str(marker)!r}, 'w').close()"

    class SystemCall:  # GLOBAL posix.system + REDUCE (torch blocks the os/posix/sys modules outright)
        def __reduce__(self):
            return os.system, (f"touch {shlex.quote(str(marker))}",)

    class Exec:  # GLOBAL builtins.exec + REDUCE
        def __reduce__(self):
            return exec, (code,)

    class Subprocess:  # GLOBAL subprocess.call + REDUCE
        def __reduce__(self):
            return subprocess.call, (["touch", str(marker)],)

    return {"os.system": SystemCall(), "exec": Exec(), "subprocess": Subprocess(),
            "setstate": _WritesMarkerOnSetstate(str(marker))}


class _WritesMarkerOnSetstate:
    """An importable class (test_checkpoints._WritesMarkerOnSetstate) whose ``__setstate__`` creates a file."""

    def __init__(self, path: str):
        self.path = path

    def __setstate__(self, state):
        open(state["path"], "w").close()
        self.__dict__.update(state)


@pytest.mark.parametrize("payload", ["os.system", "exec", "subprocess", "setstate"])
def test_a_malicious_pickle_in_a_checkpoint_never_runs(tmp_path, tsn_donor, payload):
    from mmengine.runner.checkpoint import save_checkpoint

    config, donor, donor_cfg = tsn_donor
    marker = tmp_path / "pwned"
    evil = _marker_payloads(marker)[payload]
    path = tmp_path / "evil.pth"
    save_checkpoint(_mmengine_runner_checkpoint(donor, donor_cfg, extra_meta={"hook": evil}), str(path))
    if payload == "os.system":  # a module torch never loads from: the file is refused
        with pytest.raises(PipelineError) as err:
            build_tsn(config, checkpoint=str(path), seed=0)
        assert "cannot be read safely" in str(err.value) and str(path) in str(err.value)
        assert "\n" not in str(err.value)
    else:  # everything else is an inert placeholder: the weights load, the payload does not run
        _, weights, _ = build_tsn(config, checkpoint=str(path), seed=0)
        assert weights.sha256 == weights_sha256(donor.backbone)
    assert not marker.exists()
    # The file really is malicious: a plain (unsafe) unpickling runs the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_class_from_a_module_that_does_not_exist_is_neither_imported_nor_needed(tmp_path):
    module = types.ModuleType("maivar_test_no_such_module")

    class Config:
        pass

    Config.__module__, Config.__qualname__ = module.__name__, "Config"
    module.Config = Config
    sys.modules[module.__name__] = module
    try:
        state = {"w": torch.arange(4.0)}
        torch.save({"state_dict": state, "cfg": Config()}, tmp_path / "ck.pth")
    finally:
        del sys.modules[module.__name__]
    loaded = load_state_dict_file(tmp_path / "ck.pth")
    assert module.__name__ not in sys.modules
    assert list(loaded) == ["w"] and torch.equal(loaded["w"], state["w"])


# ------------------------------------------------------------------------------------ timm checkpoints


@pytest.fixture(scope="module")
def audio_donor():
    """A timm model with random (seed 7) weights, and the hash the audio backbone must have once it loads them."""
    import timm

    torch.manual_seed(7)
    donor = timm.create_model(AUDIO, num_classes=0)
    return donor, weights_sha256(donor)


def _save(kind: str, donor: nn.Module, tmp_path):
    """Write ``donor``'s weights the way ``kind`` does; returns the file to give as extract_audio.checkpoint."""
    import safetensors.torch
    import timm

    if kind == "dataparallel":
        path = tmp_path / "dp.pth"
        torch.save(nn.DataParallel(donor).state_dict(), path)  # module.* keys
    elif kind == "compiled":
        path = tmp_path / "compiled.pth"
        torch.save(torch.compile(donor).state_dict(), path)  # _orig_mod.* keys
    elif kind == "compiled-dataparallel":
        path = tmp_path / "compiled_dp.pth"
        torch.save({"model": torch.compile(nn.DataParallel(donor)).state_dict()}, path)  # _orig_mod.module.*
    elif kind == "timm-train":  # timm's train.py checkpoint: args (argparse.Namespace), optimizer, EMA
        from timm.utils import CheckpointSaver, ModelEmaV3

        wrapped = nn.DataParallel(donor)
        ema = ModelEmaV3(donor, decay=0.5)
        for p in ema.module.parameters():
            p.data.add_(1.0)  # the EMA differs: the trained weights under state_dict must be the ones loaded
        optimizer = torch.optim.SGD(donor.parameters(), lr=0.1, momentum=0.9)
        saver = CheckpointSaver(wrapped, optimizer, args=argparse.Namespace(model=AUDIO), model_ema=ema,
                                checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path))
        saver.save_checkpoint(epoch=0, metric=71.5)
        path = tmp_path / "last.pth.tar"
    elif kind == "safetensors":
        path = tmp_path / "weights.safetensors"
        safetensors.torch.save_file(donor.state_dict(), path)
    elif kind == "safetensors-unnamed":  # a safetensors file by another name: recognized by its header
        path = tmp_path / "weights.bin"
        safetensors.torch.save_file(donor.state_dict(), path)
    elif kind in ("timm-hf-safetensors", "timm-hf-bin"):
        timm.models.save_for_hf(donor, tmp_path / "hf", safe_serialization="both")
        path = tmp_path / "hf" / ("model.safetensors" if kind == "timm-hf-safetensors" else "pytorch_model.bin")
    else:
        raise ValueError(kind)
    return path


@pytest.mark.parametrize("kind", ["dataparallel", "compiled", "compiled-dataparallel", "timm-train", "safetensors",
                                  "safetensors-unnamed", "timm-hf-safetensors", "timm-hf-bin"])
def test_timm_checkpoints_load_into_the_audio_backbone(tmp_path, audio_donor, kind):
    donor, expected = audio_donor
    path = _save(kind, donor, tmp_path)
    model, weights = create_audio_backbone(AUDIO, pretrained=False, checkpoint=str(path), seed=0)
    assert weights.source == f"checkpoint:{path}" and weights.pretrained
    assert weights.sha256 == expected
    assert torch.equal(model.conv_stem.weight, donor.conv_stem.weight)


def test_key_prefixes_are_removed_as_timm_does(tmp_path):
    from timm.models import clean_state_dict

    keys = ["module.a.weight", "_orig_mod.b.weight", "_orig_mod.module.c.weight", "module._orig_mod.d.weight",
            "e.module.weight"]
    state = {k: torch.zeros(1) for k in keys}
    torch.save(state, tmp_path / "ck.pth")
    assert list(load_state_dict_file(tmp_path / "ck.pth")) == list(clean_state_dict(state))


# ------------------------------------------------------------------------------------ one-line errors


def _bad_checkpoint(case: str, tmp_path):
    """A checkpoint file that cannot be used, and what its error must say."""
    import safetensors.torch
    import timm

    path = tmp_path / ("ck.safetensors" if case.startswith("safetensors") else "ck.pth")
    model = timm.create_model(AUDIO, num_classes=0)
    if case == "missing":
        return path, "does not exist"
    if case == "garbage":
        path.write_bytes(b"not a checkpoint")
        return path, "cannot be read (neither"
    if case == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
        return path, "cannot be read"
    if case == "empty-file":
        path.write_bytes(b"")
        return path, "the file is empty"
    if case in ("truncated-zip", "truncated-legacy"):
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=case == "truncated-zip")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, "cannot be read"
    if case == "safetensors-truncated":
        safetensors.torch.save_file(model.state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, "cannot be read as safetensors"
    if case == "whole-pickled-model":  # torch.save(model): its classes are not loaded, and no state dict is found
        torch.save(model, path)
        return path, "holds no state_dict of tensors (it holds a pickled timm.models"
    if case == "no-tensors":
        torch.save({"epoch": 3, "arch": AUDIO}, path)
        return path, "holds no state_dict of tensors"
    if case == "empty-state-dict":
        torch.save({}, path)
        return path, "empty state_dict"
    if case == "empty-under-state_dict":
        torch.save({"meta": {"epoch": 1}, "state_dict": {}}, path)
        return path, "empty state_dict"
    if case == "safetensors-empty":
        safetensors.torch.save_file({}, path)
        return path, "empty state_dict"
    if case == "wrong-model":
        torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), path)
        return path, "does not fit the model"
    if case == "os.system":
        torch.save({"state_dict": model.state_dict(), "x": _marker_payloads(tmp_path / "pwned")["os.system"]}, path)
        return path, "cannot be read safely"
    raise ValueError(case)


BAD_CASES = ["missing", "garbage", "random-bytes", "empty-file", "truncated-zip", "truncated-legacy",
             "safetensors-truncated", "whole-pickled-model", "no-tensors", "empty-state-dict",
             "empty-under-state_dict", "safetensors-empty", "wrong-model", "os.system"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_an_unusable_audio_checkpoint_is_a_one_line_error(tmp_path, case):
    path, expected = _bad_checkpoint(case, tmp_path)
    with pytest.raises(PipelineError) as err:
        create_audio_backbone(AUDIO, pretrained=False, checkpoint=str(path), seed=0)
    message = str(err.value)
    assert "\n" not in message and f"checkpoint {path} " in message and expected in message, message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["garbage", "truncated-zip", "whole-pickled-model", "empty-under-state_dict"])
def test_an_unusable_video_checkpoint_is_a_one_line_error(tmp_path, tsn_donor, case):
    config, _, _ = tsn_donor
    path, expected = _bad_checkpoint(case, tmp_path)
    with pytest.raises(PipelineError) as err:
        build_tsn(config, checkpoint=str(path), seed=0)
    message = str(err.value)
    assert "\n" not in message and f"checkpoint {path} " in message and expected in message, message
