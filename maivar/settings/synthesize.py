"""Settings of stage synthesize: ``synthesize``, the embedded default dataset (a synthetic UCF101 look-alike)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Float, Int, Section, SettingsError, setting

__all__ = ["SynthesizeSettings"]


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
    sample_rate: int = setting(Int(8000, 192000))
    noise: float = setting(Float(0, 1))

    def validate(self, where, name):
        if self.classes_without_audio >= self.classes:
            raise SettingsError(f"{where} {name}.classes_without_audio: {self.classes_without_audio} is not allowed "
                                f"(less than {name}.classes, {self.classes})")
        for key in ("width", "height"):
            if getattr(self, key) % 2:
                raise SettingsError(f"{where} {name}.{key}: {getattr(self, key)} is not allowed (an even number: "
                                    "H.264 needs even sizes)")
