"""The audio backbone: a frozen timm model (paper Sec. III-A.2: Inception-ResNet-v2's 1536-d AvgPool features)
with its weights and the mean/std its inputs are normalized with, ready for inference.

:func:`build_audio_backbone` is the one way to build it, from the ``extract_audio`` settings: stage
extract_audio builds it from params.yaml, ``maivar predict`` from the settings the run's ``audio.h5`` records.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maivar.core.errors import PipelineError
from maivar.extraction.checkpoints import Weights, load_checkpoint_into, warn_random_weights, weights_sha256
from maivar.extraction.inference import prepare_for_inference, warn_if_emulated
from maivar.extraction.weights import WeightsRequest, audio_weights_request, load_weights_file
from maivar.settings.extract import ExtractAudioSettings

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AudioBackbone:
    """A built audio backbone: the model (frozen, on its device), its weights, the mean/std of its inputs and the
    number of BatchNorm layers folded into its convolutions."""

    model: nn.Module
    weights: Weights
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folded: int

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)

    def attrs(self) -> dict:
        """What a store records of the backbone beyond its settings: what was resolved when it was built."""
        return {"mean": list(self.mean), "std": list(self.std), "conv_bn_folded": self.folded, **self.weights.attrs()}


def build_audio_weights(request: WeightsRequest) -> tuple[dict[str, torch.Tensor], Weights]:
    """The weights of ``request`` (:func:`create_audio_backbone`) as a state dict: the weights stage's builder."""
    model, weights = create_audio_backbone(request.architecture, pretrained=request.pretrained,
                                           checkpoint=request.checkpoint, seed=request.seed or 0)
    return model.state_dict(), weights


def build_audio_backbone(settings: ExtractAudioSettings, device: torch.device, *, weights_file: str | None = None,
                         check_request: bool = True, compile_model: bool = False) -> AudioBackbone:
    """The ``extract_audio`` backbone on ``device``: its weights (from ``weights_file``, stage weights_audio's
    output, made for these settings unless ``check_request`` is false; else :func:`create_audio_backbone`),
    prepared for inference
    (:func:`~maivar.extraction.inference.prepare_for_inference`: BatchNorm folded with ``fuse_conv_bn``;
    ``torch.compile`` with ``compile_model``, ``runtime.extract_audio.compile``) and its ``normalization``
    resolved."""
    if weights_file is None:
        model, weights = create_audio_backbone(settings.backbone, pretrained=settings.pretrained,
                                               checkpoint=settings.checkpoint, seed=settings.seed)
    else:
        model = _timm_model(settings.backbone, pretrained=False)
        request = audio_weights_request(settings) if check_request else None
        weights = load_weights_file(weights_file, request, model, modality="audio")
        model.eval()
        if weights.source == "random":
            warn_random_weights(f"audio backbone {settings.backbone}", settings.seed)
    folded = prepare_for_inference(model, device, compile_model=compile_model, fold_batchnorm=settings.fuse_conv_bn,
                                   input_size=settings.input_size)
    mean, std = normalization(model, settings.normalization)
    warn_if_emulated(device, settings.precision, "extract_audio.precision")
    return AudioBackbone(model, weights, mean, std, folded)


def create_audio_backbone(
    name: str, *, pretrained: bool, checkpoint: str | None, seed: int
) -> tuple[nn.Module, Weights]:
    """A timm model with pooled features (``num_classes=0``) and where its weights came from.

    ``checkpoint`` may be a ``.safetensors`` file (``safetensors.torch.save_file``, timm's ``save_for_hf``) or a
    ``torch.save`` file: a state dict, bare or under ``state_dict`` / ``model`` / ``state_dict_ema`` (timm's
    train.py checkpoints, ``args`` and all), with ``module.`` (DataParallel/DDP) or ``_orig_mod.``
    (``torch.compile``) key prefixes or none; the classifier's keys are ignored. It is read by
    :func:`~maivar.extraction.checkpoints.load_state_dict_file` rather than timm's ``load_checkpoint``: that
    refuses any checkpoint with a pickled class but ``argparse.Namespace`` (even ``numpy.float64``), prefers
    EMA weights, and fails with torch's multi-line key-mismatch errors or a bare ``FileNotFoundError``.
    """
    torch.manual_seed(seed)
    use_timm_weights = bool(pretrained) and not checkpoint
    model = _timm_model(name, pretrained=use_timm_weights)
    if checkpoint:
        classifier = model.pretrained_cfg.get("classifier") if hasattr(model, "pretrained_cfg") else None
        ignore = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier or []))
        load_checkpoint_into(model, checkpoint, ignore_prefixes=ignore)
        source = f"checkpoint:{checkpoint}"
    elif use_timm_weights:
        source = "timm-pretrained"
    else:
        warn_random_weights(f"audio backbone {name}", seed)
        source = "random"
    model.eval()
    return model, Weights(source, source != "random", weights_sha256(model))


def _timm_model(name: str, *, pretrained: bool) -> nn.Module:
    """timm's ``name`` with pooled features (``num_classes=0``), with timm's pretrained weights or initialized."""
    import timm

    if not timm.is_model(name):
        raise PipelineError(f"unknown timm model {name!r} in extract_audio.backbone: see timm.list_models()")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except Exception as exc:
        if not pretrained:
            raise
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PipelineError(
            f"timm cannot load pretrained weights for {name} ({first}): connect once to fill its cache, "
            "or set extract_audio.checkpoint to a state_dict file"
        ) from None


def normalization(model: nn.Module, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std of ``extract_audio.normalization`` (:data:`maivar.settings.extract.NORMALIZATIONS`):
    ``imagenet``, ImageNet's (the authors' notebook); ``model``, the timm model's own."""
    if name == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if name == "model":
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    raise ValueError(f"no normalization {name!r}")
