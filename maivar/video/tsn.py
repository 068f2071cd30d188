"""The video backbone: an MMAction2 recognizer (TSN) built from a config file, with its weights.

:func:`build_tsn` builds the config's ``Recognizer2D`` with MMAction2's registry (imported through
:mod:`maivar.video.mmaction_compat`) and loads an optional MMAction2 checkpoint (only the backbone makes the
features: the classification head's weights, for any number of classes, are not used). Without a
checkpoint the recognizer keeps MMAction2's own initialization, seeded, and says so in the log.

Besides MMAction2's own backbones a config may name ``BNInception`` (:mod:`maivar.video.bninception`, the
paper's TSN backbone), registered here before the model is built. A checkpoint that does not fit because it
holds BN-Inception weights in the public PyTorch port's layout gets, in its one-line error, the command that
converts it (``maivar convert-bninception``).

:func:`build_video_backbone` is the one way to build the backbone of stage extract_video: the recognizer with its
weights, the preprocessing its config declares (:class:`Preprocessing`) and prepared for inference. The stage
builds it from params.yaml, ``maivar predict`` from the settings the run's ``video.h5`` records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from maivar.core.errors import PipelineError
from maivar.extraction.checkpoints import Weights, load_checkpoint_into, warn_random_weights, weights_sha256
from maivar.extraction.inference import prepare_for_inference, warn_if_emulated
from maivar.extraction.weights import WeightsRequest, load_weights_file
from maivar.settings.extract import ExtractVideoSettings

from .config import load_mmaction_config, video_weights_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessing:
    """MMAction2's TSN test preprocessing, read from the config (:func:`preprocessing_from_config`).

    ``channel_order`` is the order of the color channels the network takes: ``RGB`` (the decoded frames as
    they are: MMAction2's ResNets) or ``BGR`` (reversed: Caffe-trained BN-Inception). ``mean`` and ``std``
    are per channel in that order, applied after the reordering, as MMAction2's ``ActionDataPreprocessor``
    does.
    """

    short_side: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"


def preprocessing_from_config(cfg) -> Preprocessing:
    """Short side (``Resize(scale=(-1, S))``), crop (``CenterCrop``), mean/std and channel order of an MMAction2
    config.

    The channel order follows ``model.data_preprocessor.to_rgb``. MMAction2's decoders (Decord, PyAV,
    OpenCV) give RGB frames, as ours do; ``ActionDataPreprocessor(to_rgb=True)`` reverses the channels of
    the stacked batch (``inputs[..., [2, 1, 0], :, :]``, named for BGR -> RGB, which on RGB frames gives BGR)
    before subtracting ``mean`` and dividing by ``std``. So ``to_rgb=True`` is ``BGR`` here, and absent or
    False is ``RGB``.
    """
    short_side = crop_size = None
    for step in cfg.get("test_pipeline", []):
        if step.get("type") == "Resize":
            scale = tuple(step.get("scale", ()))
            if len(scale) == 2 and scale[0] == -1 and step.get("keep_ratio", True):
                short_side = int(scale[1])
        elif step.get("type") == "CenterCrop":
            size = step.get("crop_size")
            crop_size = int(size if isinstance(size, int) else size[0])
    pre = cfg.model.get("data_preprocessor", {})
    if short_side is None or crop_size is None or "mean" not in pre or "std" not in pre:
        raise PipelineError(
            "the MMAction2 config needs test_pipeline Resize(scale=(-1, S)) and CenterCrop(crop_size=C), "
            "and model.data_preprocessor mean/std"
        )
    to_rgb = pre.get("to_rgb", False)
    if not isinstance(to_rgb, bool):
        raise PipelineError(f"model.data_preprocessor.to_rgb must be True or False (got {to_rgb!r})")
    return Preprocessing(short_side, crop_size, tuple(map(float, pre["mean"])), tuple(map(float, pre["std"])),
                         "BGR" if to_rgb else "RGB")


@dataclass(frozen=True)
class VideoBackbone:
    """A built video backbone: the recognizer (frozen, on its device), its weights, its config's preprocessing and
    backbone (type; depth, or None for a backbone without one such as BNInception), and the number of BatchNorm
    layers folded into its convolutions."""

    model: nn.Module
    weights: Weights
    pre: Preprocessing
    folded: int
    backbone_type: str | None
    backbone_depth: int | None

    def attrs(self) -> dict:
        """What a store records of the backbone beyond its settings: what its config and weights resolved to."""
        pre = self.pre
        attrs = {"backbone": self.backbone_type, "backbone_depth": self.backbone_depth, "crop_size": pre.crop_size,
                 "short_side": pre.short_side, "mean": list(pre.mean), "std": list(pre.std),
                 "conv_bn_folded": self.folded, **self.weights.attrs()}
        if pre.channel_order != "RGB":  # recorded only when not RGB: the outputs of RGB configs stay as they were
            attrs["channel_order"] = pre.channel_order
        return attrs


def build_video_weights(request: WeightsRequest) -> tuple[dict[str, torch.Tensor], Weights]:
    """The backbone weights of ``request`` (:func:`build_tsn`) as a state dict: the weights stage's builder."""
    model, weights, _ = build_tsn(request.architecture, checkpoint=request.checkpoint, seed=request.seed or 0)
    return model.backbone.state_dict(), weights


def build_video_backbone(settings: ExtractVideoSettings, device: torch.device, *, weights_file: str | None = None,
                         check_request: bool = True, compile_model: bool = False) -> VideoBackbone:
    """The ``extract_video`` backbone on ``device``: the recognizer of ``config`` with its weights
    (:func:`build_tsn`; from ``weights_file``, stage weights_video's output, made for these settings unless
    ``check_request`` is false), its
    preprocessing (:func:`preprocessing_from_config`), prepared for inference
    (:func:`~maivar.extraction.inference.prepare_for_inference` on its backbone: BatchNorm folded with
    ``fuse_conv_bn``; ``torch.compile`` with ``compile_model``, ``runtime.extract_video.compile``)."""
    warn_if_emulated(device, settings.precision, "extract_video.precision")
    if weights_file is None:
        model, weights, cfg = build_tsn(settings.config, checkpoint=settings.checkpoint, seed=settings.seed)
    else:
        model, cfg = _recognizer(settings.config, seed=settings.seed)
        request = video_weights_request(settings) if check_request else None
        weights = load_weights_file(weights_file, request, model.backbone, modality="video")
        model.eval()
        if weights.source == "random":
            warn_random_weights(f"video backbone ({Path(settings.config).name})", settings.seed)
    pre = preprocessing_from_config(cfg)
    folded = prepare_for_inference(model, device, compile_model=compile_model, fold_batchnorm=settings.fuse_conv_bn,
                                   input_size=pre.crop_size, image_module=model.backbone)
    return VideoBackbone(model, weights, pre, folded, cfg.model.backbone.get("type"),
                         cfg.model.backbone.get("depth"))


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
    from .bninception import port_layout_hint

    model, cfg = _recognizer(config_path, seed=seed)
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


def _recognizer(config_path: str | Path, *, seed: int) -> tuple[nn.Module, object]:
    """The MMAction2 recognizer of ``config_path`` as built (PyTorch's default initialization, after
    ``torch.manual_seed(seed)``) and its config."""
    from .bninception import register_bninception
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
    return model, cfg
