"""Audio images -> pooled backbone features (paper Sec. III-A.2: IRv2's 1536-d AvgPool features).

The images (N x S x S x 3 uint8, from ``images.h5``) are read in DataLoader workers, moved to the device
as uint8, resized there to ``input_size`` (bilinear), scaled to [0, 1] and normalised with ``mean`` /
``std`` (ImageNet's, as the authors did, or the model's own), and run through the frozen backbone in
batches. Output rows are in input order.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .backbones import OomGuard, autocast
from .resume import Journal, Resumed

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization(model: nn.Module, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``imagenet``: ImageNet's mean/std (the authors' notebook); ``model``: the timm model's own."""
    if name == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if name == "model":
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    raise ValueError(f"normalization must be imagenet or model (got {name!r})")


class _Rows(Dataset):
    def __init__(self, rows: Sequence[np.ndarray], start: int = 0):
        self.rows = rows
        self.start = start

    def __len__(self) -> int:
        return len(self.rows) - self.start

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.rows[self.start + i]))


def preprocess(images: torch.Tensor, *, input_size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """B x S x S x 3 uint8 -> B x 3 x input_size x input_size float, normalised (channels_last layout)."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


@torch.inference_mode()
def extract_audio_features(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers: int,
    device: torch.device,
    progress: bool = True,
    journal: Journal | None = None,
) -> np.ndarray:
    """N x D float32 pooled features of ``images`` (any row-indexable N x S x S x 3 uint8 source).

    With a ``journal`` (:mod:`maivar.resume`), finished batches are journaled and the images an interrupted
    run already finished are taken from it.
    """
    n = len(images)
    dim = int(model.num_features)
    out = np.empty((n, dim), dtype=np.float32)
    if n == 0:
        return out
    done = journal.load() if journal is not None else Resumed()
    if done.stop:
        log.info("resuming: %d of %d images were done by an interrupted run (%s)", done.stop, n, journal.dir)
        out[: done.stop] = np.concatenate(done.features)
    on_cuda = device.type == "cuda"
    loader = DataLoader(
        _Rows(images, done.stop), batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=on_cuda,
        persistent_workers=False,
    )
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    guard = OomGuard(batch_size)

    def forward(chunk: torch.Tensor) -> torch.Tensor:
        x = preprocess(chunk, input_size=input_size, mean=mean_t, std=std_t)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            return model(x).float()

    row = done.stop
    try:
        with tqdm(total=n, initial=row, desc="audio features", unit="img", disable=not progress,
                  mininterval=1.0) as bar:
            for batch in loader:
                feats = guard(forward, batch.to(device, non_blocking=on_cuda)).cpu().numpy()
                out[row : row + len(batch)] = feats
                if journal is not None:
                    journal.add(row, row + len(batch), list(range(row, row + len(batch))), feats, [])
                row += len(batch)
                bar.update(len(batch))
    finally:
        if journal is not None:
            journal.write_quietly()  # the finished batches survive an interruption
    return out
