"""Settings of the data stages: ``dataset`` (which clips), ``synthesize`` (the embedded default), ``prepare``
(the audio demux and the audio-subset rule)."""

from __future__ import annotations

from dataclasses import dataclass

from maivar.data.listing import PRESETS
from maivar.data.media import FRAME_CHECKS
from maivar.data.readers import READERS
from maivar.data.ucf101 import SPLIT_NUMBERS

from .base import Check, Choice, Float, Int, ListOf, Section, SettingsError, Text, setting

__all__ = ["DatasetSettings", "PrepareSettings", "SynthesizeSettings"]

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
class SynthesizeSettings(Section):
    SECTION = "synthesize"
    seed: int = setting(Int(0, 2**32 - 1))
    classes: int = setting(Int(2, 1000))
    classes_without_audio: int = setting(Int(0, 999))
    groups: int = setting(Int(8, 100), "split 1 tests on groups 1-7: at least one more to train on")
    clips_per_group: int = setting(Int(1, 100))
    silent_clips: int = setting(Int(0, 100_000))
    duration_s: float = setting(Float(0.5, 600))
    width: int = setting(Int(32, 1920))
    height: int = setting(Int(32, 1080))
    fps: int = setting(Int(1, 120))
    sample_rate: int = setting(SAMPLE_RATE)
    noise: float = setting(Float(0, 1))

    def validate(self, where, name):
        if self.classes_without_audio >= self.classes:
            raise SettingsError(f"{where} {name}.classes_without_audio: {self.classes_without_audio} is not allowed "
                                f"(less than {name}.classes, {self.classes})")
        for key in ("width", "height"):
            if getattr(self, key) % 2:
                raise SettingsError(f"{where} {name}.{key}: {getattr(self, key)} is not allowed (an even number: "
                                    "H.264 needs even sizes)")


@dataclass(frozen=True)
class PrepareSettings(Section):
    SECTION = "prepare"
    sample_rate: int = setting(SAMPLE_RATE, "the WAVs' rate")
    channels: int = setting(Int(1, 8), "the WAVs' channels")
    classes: str | tuple[str, ...] = setting(_Classes(), "which classes to keep")
    silence_dbfs: float = setting(Float(-200, 0), "a track whose peak is below this is silent_audio")
    min_class_audio_share: float = setting(SHARE)
    min_decoded_share: float = setting(SHARE)
    min_audio_coverage: float = setting(SHARE)
    frame_check: str = setting(Choice(FRAME_CHECKS))
    timeout_s: float = setting(SECONDS)
    max_rejected_share: float = setting(SHARE)

