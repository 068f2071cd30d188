"""The video backbone: an MMAction2 recognizer (TSN) built from a config file, with its weights.

:func:`build_tsn` builds the config's ``Recognizer2D`` with MMAction2's registry (imported through
:mod:`maivar.video.mmaction_compat`) and loads an optional MMAction2 checkpoint (only the backbone makes the
features: the classification head's weights, for any number of classes, are not used). Without a
checkpoint the recognizer keeps MMAction2's own initialisation, seeded, and says so in the log.

Besides MMAction2's own backbones a config may name ``BNInception`` (:mod:`maivar.video.bninception`, the
paper's TSN backbone), registered here before the model is built. A checkpoint that does not fit because it
holds BN-Inception weights in the public PyTorch port's layout gets, in its one-line error, the command that
converts it (``maivar convert-bninception``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from maivar.core.errors import PipelineError
from maivar.extraction.checkpoints import Weights, load_checkpoint_into, warn_random_weights, weights_sha256

log = logging.getLogger(__name__)


def load_mmaction_config(config_path: str | Path):
    from mmengine.config import Config

    path = Path(config_path)
    if not path.is_file():
        raise PipelineError(f"MMAction2 config {path} does not exist: fix extract_video.config in params.yaml")
    try:
        return Config.fromfile(str(path))
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"MMAction2 config {path} cannot be read: {str(exc).splitlines()[0][:200]}") from None


def _quiet_init_weights(model: nn.Module) -> None:
    """MMAction2's ``init_weights`` logs one INFO paragraph per parameter: run it with that logger at WARNING."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)


def build_tsn(config_path: str | Path, *, checkpoint: str | None, seed: int) -> tuple[nn.Module, Weights, object]:
    """The MMAction2 recognizer of ``config_path`` with its weights; returns (model, weights, config)."""
    from .bninception import port_layout_hint, register_bninception
    from .mmaction_compat import import_mmaction

    import_mmaction()
    register_bninception()
    from mmaction.registry import MODELS

    cfg = load_mmaction_config(config_path)
    if "model" not in cfg:
        raise PipelineError(f"MMAction2 config {config_path} has no `model`")
    backbone_cfg = cfg.model.get("backbone", {})
    if isinstance(backbone_cfg.get("pretrained"), str):
        raise PipelineError(
            f"{config_path}: backbone.pretrained must be None (no downloads); give weights with "
            "extract_video.checkpoint"
        )
    torch.manual_seed(seed)
    try:
        model = MODELS.build(cfg.model)
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"MMAction2 cannot build the model of {config_path}: "
                            f"{str(exc).splitlines()[0][:200]}") from None
    if not hasattr(model, "extract_feat") or not hasattr(model, "backbone"):
        raise PipelineError(f"{config_path}: the model is not a Recognizer2D-like recognizer (no "
                            "extract_feat/backbone)")
    if checkpoint:
        # Only the backbone makes the features: a checkpoint's head (any number of classes) is not used.
        try:
            load_checkpoint_into(model, checkpoint, ignore_prefixes=("cls_head.", "data_preprocessor."))
        except PipelineError as exc:
            raise PipelineError(f"{exc}{port_layout_hint(checkpoint)}") from None
        source = f"checkpoint:{checkpoint}"
    else:
        _quiet_init_weights(model)
        warn_random_weights(f"video backbone ({Path(config_path).name})", seed)
        source = "random"
    model.eval()
    return model, Weights(source, source != "random", weights_sha256(model.backbone)), cfg
