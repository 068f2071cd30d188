"""Settings of stage render: the top-level ``representation`` and the ``render`` section (the audio images)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from maivar.audio.drawing import RECIPES
from maivar.audio.raster import PIXEL_MAPPINGS
from maivar.audio.representations import REPRESENTATIONS, of_kind

from .base import Check, Choice, Float, Int, ListOf, MappingOf, Optional, Pattern, Section, SettingsError, Text, setting

__all__ = ["RenderSettings", "representation_from_params"]

COLOR = Pattern(r"#[0-9a-fA-F]{6}", "a color #rrggbb")
COLOR_KEYS = ("waveform", "curve", "background")


class _Colormap(Check):
    """A matplotlib colormap name (looked up in matplotlib's registry, imported only here)."""

    allowed = "a matplotlib colormap name, e.g. coolwarm, magma, viridis"

    def __call__(self, value, key, where):
        Text(64)(value, key, where)
        from matplotlib import colormaps

        if value not in colormaps:
            from .base import nearest

            close = nearest(value, list(colormaps))
            raise self.fail(value, key, where, f"; did you mean {close}?" if close else "")
        return value


REPRESENTATION = Choice(tuple(REPRESENTATIONS))


def representation_from_params(params: Mapping, *, where: str | None = None) -> str:
    """params.yaml's top-level ``representation``, checked against the representation table."""
    where = where or getattr(params, "where", "params.yaml")
    if "representation" not in params:
        raise SettingsError(f"{where} representation is missing ({REPRESENTATION.allowed})")
    return REPRESENTATION(params["representation"], "representation", where)


@dataclass(frozen=True)
class RenderSettings(Section):
    SECTION = "render"
    recipe: str = setting(Choice(RECIPES), "corrected | pymaivar (the authors' drawing)")
    image_size: int = setting(Int(16, 4096), "images are image_size x image_size x 3")
    figure_inches: tuple[float, float] = setting(ListOf(Float(1, 20), 2, 2),
                                                 "pymaivar: the authors' figure (width, height) at 72 dpi, then "
                                                 "resized to image_size")
    sample_rate: int = setting(Int(8000, 192000), "audio is loaded (and resampled) at this rate")
    n_fft: int = setting(Int(16, 65536))
    hop_length: int = setting(Int(1, 65536))
    n_mfcc: int = setting(Int(1, 128))
    pixel_mapping: str = setting(Choice(PIXEL_MAPPINGS))
    chroma_tuning: float | None = setting(Optional(Float(-0.5, 0.5, hi_open=True)),
                                          "fractions of a chroma bin; null = estimated per clip")
    colormaps: tuple[tuple[str, str], ...] = setting(MappingOf(tuple(r.name for r in of_kind("matrix")), _Colormap()),
                                                     "per matrix representation (else the table's default)")
    colors: tuple[tuple[str, str], ...] = setting(MappingOf(COLOR_KEYS, COLOR, required=True))
    faded_alpha: float = setting(Float(0, 1))
    line_width: int = setting(Int(1, 64), "curve thickness in pixels")
    previews_per_class: int = setting(Int(0, 1000))
    timeout_s: float = setting(Float(0, 86400, lo_open=True))
    max_rejected_share: float = setting(Float(0, 1))
    max_whole_clip_s: float = setting(Float(0, 86400, lo_open=True), "a clip that must be read whole (area, "
                                      "pymaivar, another rate) and is longer is too_long")

    def validate(self, where, name):
        if self.hop_length > self.n_fft:
            raise SettingsError(f"{where} {name}.hop_length: {self.hop_length} is not allowed (at most "
                                f"{name}.n_fft, {self.n_fft}: frames would skip samples)")
        if self.line_width > self.image_size:
            raise SettingsError(f"{where} {name}.line_width: {self.line_width} is not allowed (at most "
                                f"{name}.image_size, {self.image_size})")
