"""Every section at once: the verdict of ``maivar check-params [--params FILE]``, the same checks a stage makes."""

from __future__ import annotations

from .base import Params, check_top_level, read_params
from .data import DatasetSettings, PrepareSettings
from .extract import ExtractAudioSettings, ExtractVideoSettings
from .heads import FusionSettings, HeadSettings, TrainSettings, VideoHeadSettings
from .render import RenderSettings, representation_from_params
from .runtime import RuntimeSettings
from .synthesize import SynthesizeSettings

__all__ = ["SECTIONS", "check_params", "check_params_mapping"]

# params.yaml's sections, in its order, and their types (``representation`` is a scalar: see render).
SECTIONS = {
    "dataset": DatasetSettings, "synthesize": SynthesizeSettings, "prepare": PrepareSettings,
    "render": RenderSettings, "extract_audio": ExtractAudioSettings, "extract_video": ExtractVideoSettings,
    "train": TrainSettings, "audio_mlp": HeadSettings, "video_mlp": VideoHeadSettings,
    "fusion_mlp": FusionSettings, "runtime": RuntimeSettings,
}


def check_params(path: str = "params.yaml") -> Params:
    """Read and check every section of ``path``; the first problem is a one-line SettingsError."""
    return _check_sections(read_params(path))


def check_params_mapping(params: Params) -> Params:
    """Check every section of a params mapping (its top-level keys too); the first problem is a SettingsError."""
    return _check_sections(check_top_level(params))


def _check_sections(params: Params) -> Params:
    representation_from_params(params)
    for name, section in SECTIONS.items():
        section.from_params(params, name)
    return params
