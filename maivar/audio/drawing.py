"""Drawing one clip's audio image: :func:`render`, the drawing style params.yaml's ``render`` section describes
(:func:`style_from_settings`) and the two recipes.

``render(y, sr, representation, ...)`` turns one clip's mono waveform into a ``size x size x 3`` uint8 image,
full-bleed (no margins, no axes; ``pymaivar``: the authors' figure, margins included), without matplotlib: the
representation's feature (:mod:`maivar.audio.representations`, computed by :mod:`maivar.audio.spectra`, tested
equal to librosa's own functions) is drawn straight into a numpy array (:mod:`maivar.audio.raster`).
``render.recipe`` picks the drawing:

- ``corrected`` (the default): every representation over the whole clip, time-aligned (the pixel mapping of
  :mod:`maivar.audio.raster`), at ``render.sample_rate`` with the section's analysis settings, colormaps and
  colors. By kind: a ``wave`` is the waveform's peak envelope in the ``waveform`` color; a ``curve`` is that
  waveform faded to ``faded_alpha`` over the background with the min-max normalized curve on top in the
  ``curve`` color, ``line_width`` pixels thick; a ``matrix`` is the min-max normalized matrix through its
  colormap (``render.colormaps``, else the table's default).
- ``pymaivar``: what the authors' toolbox PyMAiVAR drew (:mod:`maivar.audio.pymaivar`).

Degenerate audio is well defined (:func:`maivar.audio.wav.clean_audio`): no output pixel is ever NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .pymaivar import render_pymaivar
from .raster import (
    check_pixel_mapping,
    colormap_lut,
    composite,
    curve_layer,
    curve_to_columns,
    hex_rgb,
    matrix_image,
    minmax,
    time_map,
    waveform_layer,
)
from .representations import get_representation, of_kind
from .spectra import Analysis
from .wav import WavClip, clean_audio

if TYPE_CHECKING:
    from maivar.settings.render import RenderSettings

RECIPES = ("corrected", "pymaivar")


@dataclass(frozen=True)
class Style:
    """How curves and waveforms are drawn (colors as ``#rrggbb``), and the matrices' colormaps."""

    colormaps: dict  # matrix representation -> matplotlib colormap name
    waveform: str
    curve: str
    background: str
    faded_alpha: float
    line_width: int
    figure_inches: tuple[float, float] = (5.0, 5.0)  # recipe pymaivar: the authors' figure, inches at 72 dpi


def style_from_settings(settings: RenderSettings) -> Style:
    """The :class:`Style` a ``render`` section describes (checked by its settings type): a matrix representation that
    ``colormaps`` does not name takes the table's default colormap (a store recorded before it existed stays
    readable)."""
    colors, colormaps = dict(settings.colors), dict(settings.colormaps)
    style = Style(
        colormaps={r.name: str(colormaps.get(r.name, r.colormap)) for r in of_kind("matrix")},
        waveform=colors["waveform"], curve=colors["curve"], background=colors["background"],
        faded_alpha=settings.faded_alpha, line_width=settings.line_width,
        figure_inches=tuple(settings.figure_inches),
    )
    for name in style.colormaps.values():
        colormap_lut(name)
    return style


def check_recipe(recipe) -> str:
    """``recipe`` if it is one of :data:`RECIPES`, else a one-line ValueError listing them."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")
    return recipe


def render(y: np.ndarray | WavClip, sr: int, representation: str, *, size: int, n_fft: int, hop_length: int,
           n_mfcc: int, chroma_tuning: float | None, style: Style, pixel_mapping: str,
           recipe: str = "corrected") -> np.ndarray:
    """One clip's audio image: ``(size, size, 3)`` uint8, full-bleed. See the module docstring.

    ``recipe="pymaivar"`` draws as the authors did (:func:`~maivar.audio.pymaivar.render_pymaivar`: their figure
    of ``style.figure_inches``, resized; ``n_fft``, ``hop_length``, ``n_mfcc``, ``chroma_tuning`` and the style's
    colors, colormaps and line width are theirs then, not these).

    ``y`` may be a :class:`~maivar.audio.wav.WavClip` opened with ``min_length=n_fft`` (recipe ``corrected``,
    ``sr`` its rate): the same image from the samples the drawing needs, read from the file (for ``nearest``, the
    windows of the frames shown and, for a wave or curve, the envelope streamed block by block).
    """
    rep = get_representation(representation)
    check_pixel_mapping(pixel_mapping)
    if check_recipe(recipe) == "pymaivar":
        return render_pymaivar(y, sr, rep.name, size=size, pixel_mapping=pixel_mapping,
                               figure_inches=style.figure_inches)
    if isinstance(y, np.ndarray):  # else a WavClip, already clean and padded, read only where drawn
        y, _ = clean_audio(y, n_fft)
    background, waveform = hex_rgb(style.background), hex_rgb(style.waveform)
    if rep.kind == "wave":
        return composite(size, background, [(waveform_layer(y, size), waveform, 1.0)])
    frames, time_weights = time_map(len(y), hop_length, size, pixel_mapping)
    values = rep.feature(y, sr, Analysis(n_fft, hop_length, n_mfcc, chroma_tuning), frames)
    if rep.kind == "matrix":
        return matrix_image(minmax(values), time_weights, size, pixel_mapping, style.colormaps[rep.name])
    columns = np.clip(curve_to_columns(minmax(values), time_weights), 0.0, 1.0)
    return composite(size, background, [(waveform_layer(y, size), waveform, style.faded_alpha),
                                        (curve_layer(columns, size, style.line_width), hex_rgb(style.curve), 1.0)])


__all__ = ["RECIPES", "Style", "style_from_settings", "check_recipe", "render"]
