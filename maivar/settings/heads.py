"""Settings of the heads: ``train`` (shared), ``audio_mlp``, ``video_mlp``, ``fusion_mlp``."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Choice, Float, Int, ListOf, Section, setting

__all__ = ["FusionSettings", "HeadSettings", "TrainSettings", "VideoHeadSettings"]

SEGMENTS = ("mean", "flatten")  # how the N x T x D video features enter an MLP
INITS = ("video", "scratch")  # the fusion MLP: from the trained video MLP (Algorithm 1) | from scratch (ablation)
EPOCHS = Int(1, 100_000)
LR = Float(0, 10, lo_open=True)
BATCH = Int(1, 1_000_000)
L1 = Float(0, 1)


@dataclass(frozen=True)
class TrainSettings(Section):
    SECTION = "train"
    seed: int = setting(Int(0, 2**32 - 1))
    threads: int = setting(Int(1, 256), "CPU threads for the heads: fixed, so that results are bit-identical")


@dataclass(frozen=True)
class HeadSettings(Section):
    """``audio_mlp`` (and the shared part of ``video_mlp``)."""

    SECTION = "audio_mlp"
    hidden: tuple[int, ...] = setting(ListOf(Int(1, 65536), 0, 16), "hidden layer widths")
    dropout: float = setting(Float(0, 1, hi_open=True))
    epochs: int = setting(EPOCHS)
    lr: float = setting(LR, "Adam's learning rate")
    batch_size: int = setting(BATCH)
    l1: float = setting(L1, "L1 weight on the Linear weights")


@dataclass(frozen=True)
class VideoHeadSettings(HeadSettings):
    SECTION = "video_mlp"
    segments: str = setting(Choice(SEGMENTS), "mean (TSN's consensus) | flatten")


@dataclass(frozen=True)
class FusionSettings(Section):
    SECTION = "fusion_mlp"
    init: str = setting(Choice(INITS))
    epochs: int = setting(Int(0, 100_000), "0: the initialized model as it is (Algorithm 1: the video MLP's output)")
    lr: float = setting(LR)
    batch_size: int = setting(BATCH)
    l1: float = setting(L1)
