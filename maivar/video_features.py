"""Videos -> TSN per-segment features (paper Sec. III-A.1: ``num_segments`` x D, AvgPool2d features).

Videos are decoded in DataLoader workers (:func:`maivar.video_frames.decode_segments`: PyAV, RGB
conversion of the kept frames only, short side + centre crop) and batched across videos; the uint8
frames go to the device (pinned memory on CUDA), are normalised there with the MMAction2 config's
data-preprocessor mean/std, and run through the recognizer's ``extract_feat(stage='backbone')``; the
feature maps are average-pooled over space. A video that fails to decode becomes a
:class:`~maivar.feature_store.Rejection`; the other rows keep the input order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .backbones import OomGuard, autocast
from .errors import PipelineError
from .feature_store import Rejection
from .video_frames import SegmentFailure, decode_segments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoClip:
    id: str
    path: str
    expected_frames: int | None = None


@dataclass(frozen=True)
class Preprocessing:
    """MMAction2's TSN test preprocessing, read from the config (:func:`preprocessing_from_config`)."""

    short_side: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def preprocessing_from_config(cfg) -> Preprocessing:
    """Short side (``Resize(scale=(-1, S))``), crop (``CenterCrop``) and mean/std of an MMAction2 config."""
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
    return Preprocessing(short_side, crop_size, tuple(map(float, pre["mean"])), tuple(map(float, pre["std"])))


class SegmentDataset(Dataset):
    """Item ``i``: ``(i, frames)`` with T x C x C x 3 uint8 frames, or ``(i, SegmentFailure)``."""

    def __init__(self, clips: Sequence[VideoClip], *, num_segments: int, short_side: int, crop_size: int,
                 timeout_s: float):
        self.clips = list(clips)
        self.num_segments, self.short_side, self.crop_size = num_segments, short_side, crop_size
        self.timeout_s = timeout_s

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        clip = self.clips[i]
        frames = decode_segments(
            clip.path, num_segments=self.num_segments, expected_frames=clip.expected_frames,
            short_side=self.short_side, crop_size=self.crop_size, timeout_s=self.timeout_s,
        )
        return i, frames if isinstance(frames, SegmentFailure) else torch.from_numpy(frames)


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)  # one decoding process per core: no nested thread pools


def collate_segments(items):
    """Stack the decoded videos of a batch; pass the failures through as ``[(index, SegmentFailure)]``."""
    good = [(i, x) for i, x in items if not isinstance(x, SegmentFailure)]
    bad = [(i, x) for i, x in items if isinstance(x, SegmentFailure)]
    frames = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], frames, bad


def pooled_segment_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """B x T x 3 x H x W normalised frames -> B x T x D: ``extract_feat(stage='backbone')`` + spatial mean."""
    b, t = x.shape[:2]
    feats, _ = model.extract_feat(x, stage="backbone")
    if isinstance(feats, (tuple, list)):
        feats = feats[-1]
    feats = feats.float()  # pool in float32 also under bf16 autocast
    if feats.ndim == 4:  # (B*T) x D x h x w
        feats = feats.mean(dim=(2, 3))
    elif feats.ndim == 3:  # (B*T) x L x D (transformers)
        feats = feats.mean(dim=1)
    return feats.reshape(b, t, -1)


def feature_dim(model: nn.Module, pre: Preprocessing, device: torch.device) -> int:
    """D, from one forward pass on a single black frame."""
    x = torch.zeros(1, 1, 3, pre.crop_size, pre.crop_size, device=device)
    with torch.inference_mode(), autocast(device):
        return int(pooled_segment_features(model, x).shape[-1])


@torch.inference_mode()
def extract_video_features(
    model: nn.Module,
    clips: Sequence[VideoClip],
    *,
    num_segments: int,
    pre: Preprocessing,
    batch_videos: int,
    workers: int,
    device: torch.device,
    timeout_s: float,
    progress: bool = True,
) -> tuple[list[int], np.ndarray, list[Rejection]]:
    """``(rows, features, rejections)``: the indices of ``clips`` that decoded (in order), their
    ``len(rows) x num_segments x D`` float32 features, and a rejection for every clip that did not."""
    on_cuda = device.type == "cuda"
    dataset = SegmentDataset(clips, num_segments=num_segments, short_side=pre.short_side,
                             crop_size=pre.crop_size, timeout_s=timeout_s)
    loader = DataLoader(
        dataset, batch_size=batch_videos, shuffle=False, num_workers=workers, collate_fn=collate_segments,
        pin_memory=on_cuda, timeout=(timeout_s * batch_videos + 60) if workers else 0,
        prefetch_factor=2 if workers else None, persistent_workers=False, worker_init_fn=_worker_init,
    )
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=device)
    std = torch.tensor(pre.std, dtype=torch.float32, device=device)
    guard = OomGuard(batch_videos)

    def forward(frames: torch.Tensor) -> torch.Tensor:
        # B x T x H x W x 3 uint8 -> normalise in NHWC, then a permuted view: B x T x 3 x H x W whose
        # (B*T) x 3 x H x W reshape (in extract_feat) is channels_last in memory, at no copy.
        x = ((frames.float() - mean) / std).permute(0, 1, 4, 2, 3)
        with autocast(device):
            return pooled_segment_features(model, x).float()

    rows: list[int] = []
    chunks: list[np.ndarray] = []
    rejected: list[Rejection] = []
    try:
        with tqdm(total=len(dataset), desc="video features", unit="video", disable=not progress,
                  mininterval=1.0) as bar:
            for indices, frames, failures in loader:
                for i, failure in failures:
                    log.warning("rejected %s: %s (%s)", clips[i].id, failure.reason, failure.detail)
                    rejected.append(Rejection(clips[i].id, failure.reason, failure.detail))
                if frames is not None:
                    feats = guard(forward, frames.to(device, non_blocking=on_cuda))
                    chunks.append(feats.cpu().numpy())
                    rows.extend(indices)
                bar.update(len(indices) + len(failures))
    except RuntimeError as exc:
        text = str(exc)
        if "DataLoader" in text:  # a worker killed (decoder crash) or stuck past the loader timeout
            raise PipelineError(f"video decoding failed: {text.splitlines()[0][:200]}; rerun with workers: 1 to find the file") from None
        raise
    if chunks:
        features = np.concatenate(chunks)
    else:
        features = np.empty((0, num_segments, feature_dim(model, pre, device)), dtype=np.float32)
    return rows, features, rejected
