"""Running a frozen backbone for inference: its device, BatchNorm folding, precision, and out-of-memory halving.

- :func:`select_device` (``runtime.device``: ``auto`` is CUDA when present);
- :func:`prepare_for_inference`: eval mode, frozen, on the device, channels_last; BatchNorm folded
  (:func:`fuse_conv_bn`, checked against the unfolded output) and ``torch.compile`` when asked;
- :func:`autocast` / :func:`compute_dtype` / :func:`warn_if_emulated`: ``extract_*.precision`` (fp32, or bf16
  autocast; :data:`maivar.settings.extract.PRECISIONS`, checked by the settings);
- :class:`OomGuard`: CUDA out of memory halves the chunk size and retries.

The weights come from :mod:`maivar.extraction.checkpoints`; the builders that use both are
:func:`maivar.audio.backbone.build_audio_backbone` and :func:`maivar.video.tsn.build_video_backbone`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from maivar.core.errors import PipelineError

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; ``cuda`` without a GPU is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise PipelineError(f"device must be auto, cpu or cuda (got {name!r})")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError("device is cuda but torch sees no GPU: set device: auto or cpu in params.yaml")
    return torch.device(name)



def prepare_for_inference(model: nn.Module, device: torch.device, *, compile_model: bool = False,
                          fold_batchnorm: bool = False, input_size: int | None = None,
                          image_module: nn.Module | None = None) -> int:
    """Frozen, in eval mode, on ``device``, channels_last; then, on ``image_module`` (the part that takes
    an image batch: the timm model itself, or a recognizer's ``backbone``; default ``model``), BatchNorm
    folded into the convolutions (:func:`fuse_conv_bn`, checked on ``input_size`` images) and
    ``torch.compile`` when asked, in that order. Returns the number of BatchNorm layers folded.

    channels_last on CPU too: measured 1.3-1.4x faster than NCHW for ResNet-50 and ~1.15x for IRv2
    with torch's oneDNN convolutions on 2 cores (benchmarks/bench_extract.py); the results match NCHW to
    float32 rounding.
    """
    model.eval()  # not chained: some MMAction2 modules' train() returns None
    model.requires_grad_(False)
    model.to(device)
    model.to(memory_format=torch.channels_last)
    image_module = model if image_module is None else image_module
    folded = 0
    if fold_batchnorm:
        if input_size is None:
            raise ValueError("folding BatchNorm needs the input size to check the result on")
        folded = fuse_conv_bn(image_module, input_size=input_size)
    if compile_model:
        image_module.compile(dynamic=False)
    return folded


def fuse_conv_bn(module: nn.Module, *, input_size: int, rtol: float = 1e-3) -> int:
    """Fold each ``BatchNorm2d`` that directly follows a ``Conv2d`` among its siblings into that conv, in place.

    A frozen backbone's BatchNorm is a fixed per-channel affine map, so it can live in the convolution's
    weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``; the BN becomes ``nn.Identity``, timm's
    ``BatchNormAct2d`` its dropout + activation): one pass over each activation map less, ~1.2x faster for
    ResNet-50 on a CPU, the same features to float32 rounding. This is what mmcv's ``fuse_conv_bn``
    (MMAction2's ``--fuse-conv-bn``) does; here a ``Conv2d`` (or subclass, as mmcv's wrapper) followed by
    exactly a ``BatchNorm2d`` (or timm's ``BatchNormAct2d``) is folded, and the result is checked:
    ``module`` must give the same output on a random ``2 x 3 x input_size x input_size`` batch to ``rtol``
    (relative to the largest output), else every fold is undone (a BN registered after a conv it does not
    normalize) and 0 is returned.

    ``module`` must be in eval mode and take an image batch. Returns the number of folds kept.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if module.training:
        raise ValueError("fuse_conv_bn needs a module in eval mode")
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        before = _first_tensor(module(x)).float()
    undo = []
    for parent in list(module.modules()):
        previous = None
        for name, child in list(parent.named_children()):
            after_bn = _after_batchnorm(child)
            if after_bn is not None and previous is not None and child.track_running_stats:
                conv_name, conv = previous
                fused = fuse_conv_bn_eval(conv, child)
                if conv.weight.is_contiguous(memory_format=torch.channels_last):
                    fused.to(memory_format=torch.channels_last)
                parent._modules[conv_name] = fused
                parent._modules[name] = after_bn
                undo.append((parent, conv_name, conv, name, child))
                previous = None
            else:
                previous = (name, child) if isinstance(child, nn.Conv2d) else None  # mmcv wraps nn.Conv2d
    if not undo:
        return 0
    with torch.inference_mode():
        after = _first_tensor(module(x)).float()
    scale = before.abs().max().clamp_min(1e-12)
    error = float(((after - before).abs().max() / scale).item()) if after.shape == before.shape else float("inf")
    if not error <= rtol:
        for parent, conv_name, conv, name, bn in undo:
            parent._modules[conv_name] = conv
            parent._modules[name] = bn
        log.warning("conv+BN folding changed %s's output by %.1e (> %g): left unfused", type(module).__name__,
                    error, rtol)
        return 0
    log.info("folded %d BatchNorm layers into their convolutions (output change %.1e)", len(undo), error)
    return len(undo)


def _after_batchnorm(child: nn.Module) -> nn.Module | None:
    """What replaces a foldable BatchNorm: ``nn.Identity`` for ``BatchNorm2d``, the dropout and activation
    for timm's ``BatchNormAct2d`` (BN, then ``drop``, then ``act``); None for anything else."""
    if type(child) is nn.BatchNorm2d:
        return nn.Identity()
    if type(child).__name__ == "BatchNormAct2d" and type(child).__module__.startswith("timm."):
        return nn.Sequential(child.drop, child.act)
    return None


def _first_tensor(out) -> torch.Tensor:
    while isinstance(out, (tuple, list)):
        out = out[-1]
    return out


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU with bf16 instructions
    (AVX512-BF16 or AMX, as oneDNN reports). Elsewhere bf16 is emulated, slower than fp32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def warn_if_emulated(device: torch.device, precision: str, what: str) -> None:
    if precision == "bf16" and not native_bf16(device):
        log.warning("%s: bf16 on a %s without native bf16 is emulated and slower than fp32: set %s fp32", what,
                    device.type.upper(), what)


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast (convolutions and matrix products in bf16, the rest in fp32) on ``device`` when
    ``precision`` is ``bf16``; plain fp32 otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def compute_dtype(precision: str) -> str:
    """How a store records its precision (its ``dtype`` attribute)."""
    return "bfloat16-autocast" if precision == "bf16" else "float32"


class OomGuard:
    """Run ``fn`` over a batch in chunks; CUDA out of memory halves the chunk size and retries the chunk.

    The chunk size only shrinks, so one OOM costs one retry, not one per batch. Out of memory with a
    chunk of 1 is a one-line error.
    """

    def __init__(self, chunk: int):
        self.chunk = max(1, int(chunk))

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        outs = []
        start = 0
        while start < len(batch):
            n = self.chunk
            try:
                outs.append(fn(batch[start : start + n]))
                start += n
            except torch.cuda.OutOfMemoryError:
                if n == 1:
                    raise PipelineError("out of GPU memory with a batch of one: use a smaller model or input, or "
                                        "device: cpu") from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.chunk = max(1, n // 2)
                log.warning("CUDA out of memory with a batch of %d: retrying with %d", n, self.chunk)
        return torch.cat(outs) if len(outs) > 1 else outs[0]
