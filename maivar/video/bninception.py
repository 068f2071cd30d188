"""BN-Inception, the paper's video backbone: TSN's original 2D network (MAiVAR Sec. III-A.1: 1024-d AvgPool
features per segment), as an MMAction2 backbone, and the converter for its public weights.

MMAction2 1.x ships no BN-Inception. :class:`BNInception` is the Caffe model (Ioffe & Szegedy 2015, as
trained for TSN) in the layout of its widely used PyTorch port: Cadene's ``pretrainedmodels.bninception``
and tsn-pytorch's ``tf_model_zoo`` ``BNInception`` (the same module names, the same layers): ``conv1_7x7_s2``,
``conv1_7x7_s2_bn``, ``conv2_3x3_reduce``, ``conv2_3x3``, then the inception blocks 3a, 3b, 3c, 4a..4e, 5a,
5b with the branches ``<block>_1x1``, ``<block>_3x3_reduce`` / ``_3x3``, ``<block>_double_3x3_reduce`` /
``_double_3x3_1`` / ``_double_3x3_2`` and ``<block>_pool`` / ``_pool_proj``; every convolution has a bias and
is followed by its BatchNorm (``<name>_bn``, eps 1e-5, affine) and a ReLU. 3c and 4e halve the resolution
(stride-2 3x3 convolutions beside a stride-2 max pool, no 1x1 or pool projection); 5b's pool branch is a
3x3 max pool, the others' a 3x3 average pool. Pools round up (Caffe's ``ceil_mode``).

What TSN feeds it: 224 x 224 BGR frames in 0..255 with mean [104, 117, 128] (B, G, R) subtracted and std 1
(configs/tsn_bninception_video.py: ``to_rgb=True`` turns MMAction2's RGB frames into BGR). ``forward``
returns the last feature map, N x 1024 x 7 x 7 at 224 px (the port's ``global_pool`` and classifier are
left to MMAction2's ``TSNHead(in_channels=1024)``), so that ``Recognizer2D.extract_feat(stage='backbone')``
gives what stage extract_video average-pools into the paper's 1024-d segment features.

The port's weights do not load as they are: an MMAction2 checkpoint names the backbone ``backbone.<name>``.
:func:`convert_port_state_dict` / :func:`convert_checkpoint` (``maivar convert-bninception SRC DST``)
rename them and drop the classifier (reported): bare port keys (``conv1_7x7_s2.weight``, classifier
``last_linear.*`` or ``fc.*``) and tsn-pytorch / TSM checkpoints (``module.base_model.conv1_7x7_s2.weight``,
classifier ``module.new_fc.*``). The first PyTorch port stored the BatchNorm tensors as 1 x C (tsn-pytorch
issues #62, #97): they are reshaped to C. Checkpoints saved before PyTorch 0.4 have no
``num_batches_tracked`` (unused in eval mode): it is set to 0.

:func:`register_bninception` puts the class into MMAction2's ``MODELS`` registry under ``'BNInception'``;
:func:`maivar.video.tsn.build_tsn` calls it, so a config's ``backbone=dict(type='BNInception')`` builds it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from maivar.core.errors import PipelineError

log = logging.getLogger(__name__)

# The stem: (convolution, input channels, output channels, kernel, stride, padding, its ReLU's name).
_STEM = (
    ("conv1_7x7_s2", 3, 64, 7, 2, 3, "conv1_relu_7x7"),
    ("conv2_3x3_reduce", 64, 64, 1, 1, 0, "conv2_relu_3x3_reduce"),
    ("conv2_3x3", 64, 192, 3, 1, 1, "conv2_relu_3x3"),
)

# The inception blocks: (name, input channels, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool,
# pool projection). 0 = the branch has no such convolution; pool "max/2" is the stride-2 reduction of 3c and
# 4e (whose 3x3 convolutions then have stride 2 too); the output channels are the sum of the branches'.
_BLOCKS = (
    ("inception_3a", 192, 64, 64, 64, 64, 96, "avg", 32),        # -> 256
    ("inception_3b", 256, 64, 64, 96, 64, 96, "avg", 64),        # -> 320
    ("inception_3c", 320, 0, 128, 160, 64, 96, "max/2", 0),      # -> 576, 1/2 resolution
    ("inception_4a", 576, 224, 64, 96, 96, 128, "avg", 128),     # -> 576
    ("inception_4b", 576, 192, 96, 128, 96, 128, "avg", 128),    # -> 576
    ("inception_4c", 576, 160, 128, 160, 128, 160, "avg", 128),  # -> 608
    ("inception_4d", 608, 96, 128, 192, 160, 192, "avg", 128),   # -> 608
    ("inception_4e", 608, 0, 128, 192, 192, 256, "max/2", 0),    # -> 1056, 1/2 resolution
    ("inception_5a", 1056, 352, 192, 320, 160, 224, "avg", 128),  # -> 1024
    ("inception_5b", 1024, 352, 192, 320, 192, 224, "max", 128),  # -> 1024
)

# Classifiers of the port's checkpoints, after the module. / base_model. prefixes: Cadene's last_linear,
# tf_model_zoo's fc (tsn-pytorch's ``last_layer_name``), tsn-pytorch's and TSM's new_fc.
CLASSIFIER_PREFIXES = ("last_linear.", "fc.", "new_fc.")
_WRAPPER_PREFIXES = ("module.", "base_model.")  # DataParallel, then tsn-pytorch's TSN.base_model
MMACTION_PREFIX = "backbone."


class BNInception(nn.Module):
    """BN-Inception up to inception_5b: N x 3 x H x W BGR frames -> N x 1024 x H/32 x W/32 (7 x 7 at 224 px).

    Module names, shapes and order are those of the PyTorch port (see the module docstring): each
    convolution is registered right before its BatchNorm, so that
    :func:`maivar.extraction.inference.fuse_conv_bn` folds all 69 of them. ``pretrained`` exists for
    MMAction2-style configs and must be None: weights come from a checkpoint (``extract_video.checkpoint``).
    """

    def __init__(self, pretrained: str | None = None):
        super().__init__()
        if pretrained is not None:
            raise ValueError("BNInception loads no pretrained weights itself: give them with extract_video.checkpoint")
        self._relu_of: dict[str, str] = {}
        for name, cin, cout, kernel, stride, padding, relu in _STEM[:1]:
            self._add_unit(name, cin, cout, kernel, stride, padding, relu)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name, cin, cout, kernel, stride, padding, relu in _STEM[1:]:
            self._add_unit(name, cin, cout, kernel, stride, padding, relu)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for block in _BLOCKS:
            self._add_block(*block)

    def _add_unit(self, name: str, cin: int, cout: int, kernel: int, stride: int, padding: int, relu: str) -> None:
        """A convolution ``name`` (with bias), its BatchNorm ``name_bn`` and its ReLU ``relu``, in that order."""
        setattr(self, name, nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(cout, eps=1e-5, affine=True))
        setattr(self, relu, nn.ReLU(inplace=True))
        self._relu_of[name] = relu

    def _add_block(self, b: str, cin: int, c1x1: int, c3r: int, c3: int, cdr: int, cd: int, pool: str,
                   cproj: int) -> None:
        stride = 2 if pool == "max/2" else 1
        if c1x1:
            self._add_unit(f"{b}_1x1", cin, c1x1, 1, 1, 0, f"{b}_relu_1x1")
        self._add_unit(f"{b}_3x3_reduce", cin, c3r, 1, 1, 0, f"{b}_relu_3x3_reduce")
        self._add_unit(f"{b}_3x3", c3r, c3, 3, stride, 1, f"{b}_relu_3x3")
        self._add_unit(f"{b}_double_3x3_reduce", cin, cdr, 1, 1, 0, f"{b}_relu_double_3x3_reduce")
        self._add_unit(f"{b}_double_3x3_1", cdr, cd, 3, 1, 1, f"{b}_relu_double_3x3_1")
        self._add_unit(f"{b}_double_3x3_2", cd, cd, 3, stride, 1, f"{b}_relu_double_3x3_2")
        if pool == "avg":
            layer = nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
        elif pool == "max":
            layer = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        else:
            layer = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        setattr(self, f"{b}_pool", layer)
        if cproj:
            self._add_unit(f"{b}_pool_proj", cin, cproj, 1, 1, 0, f"{b}_relu_pool_proj")

    def init_weights(self) -> None:
        """Random initialization (no checkpoint): MMAction2's ResNet rule, Kaiming-normal convolutions (fan out,
        zero bias) and identity BatchNorms, so that random-weight features keep their scale through the ~30
        layers (PyTorch's default convolution init shrinks them at each layer)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _unit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        # looked up at each call: fuse_conv_bn replaces the convolution and turns the BatchNorm into Identity
        x = getattr(self, f"{name}_bn")(getattr(self, name)(x))
        return getattr(self, self._relu_of[name])(x)

    def _block(self, b: str, x: torch.Tensor) -> torch.Tensor:
        branches = []
        if hasattr(self, f"{b}_1x1"):
            branches.append(self._unit(f"{b}_1x1", x))
        branches.append(self._unit(f"{b}_3x3", self._unit(f"{b}_3x3_reduce", x)))
        double = self._unit(f"{b}_double_3x3_reduce", x)
        branches.append(self._unit(f"{b}_double_3x3_2", self._unit(f"{b}_double_3x3_1", double)))
        pooled = getattr(self, f"{b}_pool")(x)
        branches.append(self._unit(f"{b}_pool_proj", pooled) if hasattr(self, f"{b}_pool_proj") else pooled)
        return torch.cat(branches, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1_3x3_s2(self._unit("conv1_7x7_s2", x))
        x = self._unit("conv2_3x3", self._unit("conv2_3x3_reduce", x))
        x = self.pool2_3x3_s2(x)
        for block in _BLOCKS:
            x = self._block(block[0], x)
        return x


def register_bninception() -> None:
    """Register :class:`BNInception` in MMAction2's ``MODELS`` registry as ``'BNInception'`` (once; mmaction
    must be imported through :func:`maivar.video.mmaction_compat.import_mmaction` first)."""
    from mmaction.registry import MODELS

    if "BNInception" not in MODELS.module_dict:
        MODELS.register_module(name="BNInception", module=BNInception)


# ------------------------------------------------------------------------------ the port's weights


def _port_shapes() -> dict[str, torch.Size]:
    """Every state-dict entry of :class:`BNInception` with its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in BNInception().state_dict().items()}


def _bare(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def looks_like_port_layout(keys) -> bool:
    """Whether state-dict ``keys`` are BN-Inception's in the PyTorch port's layout (not MMAction2's)."""
    names = set(_port_shapes())
    return any(_bare(k) in names for k in keys) and not any(k.startswith(MMACTION_PREFIX) for k in keys)


def convert_port_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The port's BN-Inception state dict -> MMAction2's layout; returns ``(converted, dropped)``.

    ``state`` has bare keys (``conv1_7x7_s2.weight``) or tsn-pytorch's (``module.base_model.conv1_7x7_s2.weight``).
    ``converted`` holds every backbone tensor as ``backbone.<name>`` (1 x C BatchNorm tensors reshaped to C, a
    missing ``num_batches_tracked`` set to 0); ``dropped`` lists the classifier keys left out, as given. Any
    other key, a missing tensor or a wrong shape is a one-line :class:`PipelineError`.
    """
    shapes = _port_shapes()
    if state and all(k.startswith(MMACTION_PREFIX) for k in state):
        raise PipelineError("the state dict is already in MMAction2's layout (backbone.*): use it as it is")
    converted: dict[str, torch.Tensor] = {}
    dropped, unexpected, wrong = [], [], []
    for key, value in state.items():
        name = _bare(key)
        if name.startswith(CLASSIFIER_PREFIXES):
            dropped.append(key)
        elif name not in shapes:
            unexpected.append(key)
        elif value.shape == shapes[name]:
            converted[name] = value
        elif value.ndim == 2 and value.shape[0] == 1 and value.shape[1:] == shapes[name]:
            converted[name] = value.reshape(shapes[name])  # the first port's 1 x C BatchNorm tensors
        else:
            wrong.append(f"{key} {tuple(value.shape)} for {tuple(shapes[name])}")
    for name in shapes:
        if name not in converted and name.endswith(".num_batches_tracked"):
            converted[name] = torch.tensor(0, dtype=torch.long)  # saved before PyTorch 0.4; unused in eval mode
    missing = [name for name in shapes if name not in converted]
    if missing or unexpected or wrong:
        parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise PipelineError(f"not a BN-Inception state dict in the PyTorch port's layout: {', '.join(parts)}")
    return {MMACTION_PREFIX + name: converted[name] for name in shapes}, dropped


def convert_checkpoint(src: str | Path, dst: str | Path) -> tuple[int, list[str]]:
    """Convert the port's checkpoint file ``src`` (see :func:`convert_port_state_dict`) into an MMAction2-style
    checkpoint ``dst`` (``{'state_dict': {'backbone.<name>': ...}, 'meta': ...}``, written atomically) that
    ``extract_video.checkpoint`` can point at with configs/tsn_bninception_video.py. Returns the number of
    backbone tensors written and the classifier keys dropped."""
    from maivar.core.atomic import atomic_path
    from maivar.extraction.checkpoints import load_state_dict_file

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise PipelineError(f"{src} does not exist")
    try:
        converted, dropped = convert_port_state_dict(load_state_dict_file(src))
    except PipelineError as exc:
        raise PipelineError(f"{src}: {exc}") from None
    meta = {"converted_from": src.name, "backbone": "BNInception", "dropped": dropped}
    with atomic_path(dst) as tmp:
        torch.save({"meta": meta, "state_dict": converted}, tmp)
    log.info("wrote %s: %d BN-Inception backbone tensors; dropped %s", dst, len(converted),
             ", ".join(dropped) or "nothing")
    return len(converted), dropped


def port_layout_hint(checkpoint: str | Path) -> str:
    """A sentence for a checkpoint that does not fit: how to convert it, if it holds the port's BN-Inception
    weights; else ''."""
    from maivar.extraction.checkpoints import load_state_dict_file

    try:
        keys = list(load_state_dict_file(checkpoint))
    except PipelineError:
        return ""
    if not looks_like_port_layout(keys):
        return ""
    return (f" It holds BN-Inception weights in the PyTorch port's layout (conv1_7x7_s2.*, module.base_model.*): "
            f"convert them with `maivar convert-bninception {checkpoint} OUT.pth` and set extract_video.checkpoint "
            "to OUT.pth, with configs/tsn_bninception_video.py")
