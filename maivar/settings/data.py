"""Settings of stage prepare: ``dataset`` (which clips) and ``prepare`` (the audio demux and the audio-subset
rule). ``synthesize`` has its own module (:mod:`maivar.settings.synthesize`): the embedded default does not
depend on the dataset readers."""

from __future__ import annotations

from dataclasses import dataclass

from maivar.data.listing import PRESETS
from maivar.data.media import FRAME_CHECKS
from maivar.data.readers import READERS
from maivar.data.ucf101 import SPLIT_NUMBERS

from .base import Check, Choice, Float, Int, ListOf, Optional, Section, Text, setting

__all__ = ["SAMPLE_RATE", "DatasetSettings", "PrepareSettings"]

SAMPLE_RATE = Int(8000, 192000)
SHARE = Float(0, 1)
SECONDS = Float(0, 86400, lo_open=True)


class _Annotations(Check):
    """null, a file name, or a list of file names (relative to the dataset's root)."""

    allowed = "null, a file name or a list of 1 to 1000 file names"

    def __call__(self, value, key, where):
        if value is None:
            return None
        if isinstance(value, str):
            return Text(what="a file name")(value, key, where)
        return ListOf(Text(what="a file name"), 1, 1000)(value, key, where)


class _Classes(Check):
    """``all``, a named class list (``paper``, ``kinetics_sounds``) or a list of class names."""

    allowed = f"all, {', '.join(PRESETS)} or a list of 1 to 100000 class names"

    def __call__(self, value, key, where):
        if isinstance(value, str):
            return Choice(("all", *PRESETS))(value, key, where)
        return ListOf(Text(256, "a class name"), 1, 100_000)(value, key, where)


@dataclass(frozen=True)
class DatasetSettings(Section):
    SECTION = "dataset"
    format: str = setting(Choice(tuple(READERS)), "the annotation format (README, 'Your own data')")
    root: str = setting(Text(what="a folder"), "the dataset's folder")
    split: int = setting(Int(SPLIT_NUMBERS[0], SPLIT_NUMBERS[-1]), "ucf101: the official train/test split")
    annotations: str | tuple[str, ...] | None = setting(_Annotations(), "csv, kinetics: the annotation file(s)")


@dataclass(frozen=True)
class PrepareSettings(Section):
    SECTION = "prepare"
    sample_rate: int = setting(SAMPLE_RATE, "the WAVs' rate")
    channels: int = setting(Int(1, 8), "the WAVs' channels")
    classes: str | tuple[str, ...] = setting(_Classes(), "which classes to keep")
    silence_dbfs: float | None = setting(Optional(Float(-200, 0)),
                                         "a track whose peak is below this is silent_audio; null = off")
    min_class_audio_share: float | None = setting(Optional(SHARE), "null = off (a class with any clip kept is kept)")
    min_decoded_share: float = setting(SHARE)
    min_audio_coverage: float | None = setting(Optional(SHARE), "null = off")
    frame_check: str = setting(Choice(FRAME_CHECKS))
    timeout_s: float = setting(SECONDS)
    max_rejected_share: float = setting(SHARE)
    max_duration_s: float = setting(SECONDS, "a clip (or window) declaring a longer duration is too_long")
    max_pixels: int = setting(Int(1, 1 << 30), "a video whose frames have more pixels (width x height) is too_large")

