"""Recipe ``pymaivar``: the audio images as the authors' notebooks drew them, without matplotlib.

The authors drew each UCF101 clip into a matplotlib figure of 5 x 5 inches at 72 dpi (a 360 x 360 PNG) with
the axes off and matplotlib's default subplot margins (``figure.subplot.*``: the plot area spans 0.125..0.9 of
the width and 0.11..0.88 of the height, the rest is a white border), and their classifier's loader resized the
PNG to the backbone's input (``Resize(299)``, bilinear). :func:`render_pymaivar` does the same: the plot area
(:func:`plot_area`) drawn into a white ``render.figure_inches`` x 72 dpi canvas at the default margins, then
resized (PIL, bilinear, as torchvision's ``Resize`` on a PIL image) to ``image_size x image_size``. The
toolbox's ``code/core.py`` drew 14 x 5 inches (10 x 5 for the roll-off): ``render.figure_inches`` reproduces
either; a figure that is not square is squeezed to the square image. Their choices:

- each WAV at its own rate (``librosa.load(sr=None)``); librosa 0.8's defaults: ``n_fft`` 2048, hop 512,
  20 MFCCs, the chromagram's tuning estimated per clip, and **reflect-padded** STFT frames (``pad_mode=
  'reflect'``; librosa 0.10 made zero padding the default: :func:`authors_feature`); their colors
  (matplotlib's C0 waveform, a red curve, the waveform at alpha 0.4 under it). ``render.sample_rate``,
  ``n_fft``, ``hop_length``, ``n_mfcc``, ``chroma_tuning``, ``colormaps``, ``colors``, ``faded_alpha`` and
  ``line_width`` are not used; ``image_size``, ``figure_inches`` and ``pixel_mapping`` (for the matrices; the
  curves are drawn as polylines) are.
- ``waveplot`` (the wave): ``waveplot``'s envelope (the peak ``|y|`` of each ``sr // 1000``-sample frame for a
  clip over 50,000 samples, of each sample otherwise: :func:`waveplot_envelope`) across the width (``waveplot``
  set the x-limits to its points), on a y-axis autoscaled by matplotlib: ``+-1.1 x peak`` (5 % margins), so it
  fills 1/1.1 of the height. A pixel is filled when the polygon covers most of it (its column's median envelope
  reaches the row's center), and the polygon's 1-point outline is stroked too (``fill_between`` was given the
  color, which colors the edge): with alpha 0.4 the outline shows as a darker band along the envelope.
- the curves (``spectral_centroid``, ``spectral_rolloff``): that waveform at alpha 0.4 and, on the same axis,
  the min-max normalized curve (0..1; the limits autoscale over ``[-peak, max(peak, 1)]`` plus 5 %, so the
  curve sits in the upper half). Frame ``f`` is drawn at ``frames_to_time(f)`` = ``f * 512 / 22050`` s
  (librosa's default rate) while the axis spans the clip at its own rate: for 44.1 kHz audio the curve's first
  half fills the width and the rest is clipped away. Every vertex of the polyline counts (a column spans the
  rows the line reaches near it: :func:`polyline_columns`). The roll-off is computed on ``y + 0.01``. Colors
  are blended as matplotlib's Agg renderer blends them (8-bit, truncating).
- Line widths are matplotlib's, in points at 72 dpi (1 point = 1 pixel of the figure): the curve's 1.5, the
  waveform outline's 1.
- the matrices (``mfcc``, ``mfcc_scaled``, ``chromagram``, and our ``melspectrogram`` drawn the same way):
  ``specshow``: all frames computed, frame ``f`` of ``n`` the f-th of ``n`` equal cells across the width
  (:func:`~maivar.audio.raster.uniform_map`), colors normalized over all of them; the colormap is the one
  ``librosa.display.cmap`` picks per clip (:func:`specshow_cmap`: ``coolwarm`` for data of both signs,
  ``magma`` otherwise; the mel spectrogram in dB below its maximum always gets ``magma``), but the
  chromagram's, ``coolwarm`` as the authors gave it; each value takes the colormap entry matplotlib gives it
  (``floor(v * 256)``, :func:`matplotlib_levels`).

Measured against matplotlib and librosa running their notebook's calls (tests/test_audio_images.py, librosa
0.11 with ``pad_mode='reflect'``, ``waveshow`` standing in for ``waveplot``; docs/PAPER.md lists the figures):
the plot area full-bleed pixel for pixel for the matrices, the waveform and curves but for the pixels Agg
antialiases at their edges; the whole resized image correlates 0.95 or more for every representation.
"""

from __future__ import annotations

import numpy as np

from .raster import composite, envelope_layer, hex_rgb, matrix_image, minmax, span_layer, uniform_map
from .representations import get_representation
from .spectra import Analysis
from .wav import clean_audio

# What PyMAiVAR's code/core.py fixed: librosa's defaults (n_fft 2048, hop 512, 20 MFCCs, the chromagram's tuning
# estimated), the curves' frame times from librosa.frames_to_time's default rate, roll-off on x + 0.01,
# matplotlib's colors (C0 waveform, alpha 0.4 under the red curve), coolwarm for the chromagram (the other
# matrices' colormap is chosen per clip).
PYMAIVAR_ANALYSIS = Analysis(n_fft=2048, hop_length=512, n_mfcc=20, chroma_tuning=None)
PYMAIVAR_CURVE_TIME_RATE = 22050  # librosa.frames_to_time(frames) without sr: the curve's time axis
PYMAIVAR_SIGNAL_OFFSETS = {"spectral_rolloff": 0.01}  # spectral_rolloff(x + 0.01): a curve of the shifted signal
PYMAIVAR_COLORMAPS = {"chromagram": "coolwarm"}  # specshow(cmap=...); the others: librosa.display.cmap per clip
PYMAIVAR_WAVEFORM, PYMAIVAR_CURVE, PYMAIVAR_BACKGROUND = "#1f77b4", "#ff0000", "#ffffff"
PYMAIVAR_FADED_ALPHA = 0.4  # the waveform under a curve
PYMAIVAR_MARGIN = 0.05  # matplotlib's axes.ymargin: the autoscaled y-limits of the waveform's axis
# matplotlib's line widths in points: Line2D (the curve) 1.5, the waveform polygon's outline (patch) 1.0
PYMAIVAR_CURVE_POINTS, PYMAIVAR_OUTLINE_POINTS = 1.5, 1.0
PYMAIVAR_DPI = 72  # the notebooks' figures (Jupyter's inline backend): a point is a pixel
PYMAIVAR_FIGURE_INCHES = (5.0, 5.0)  # the notebooks' figsize: a 360 x 360 PNG
# matplotlib's default figure.subplot.{left, right, bottom, top}: the plot area's box in the figure
PYMAIVAR_SUBPLOT = (0.125, 0.9, 0.11, 0.88)


def specshow_cmap(data: np.ndarray, atol: float = 0.0) -> str:
    """The colormap ``librosa.display.specshow`` picks for ``data`` when given none (``librosa.display.cmap``):
    ``coolwarm`` when the 2nd and 98th percentiles of the finite values have opposite signs, else ``magma``.
    Values within ``atol`` of 0 count as 0."""
    data = np.asarray(data)
    lo, hi = np.percentile(data[np.isfinite(data)], [2, 98])
    return "magma" if lo >= -atol or hi <= atol else "coolwarm"


def matplotlib_levels(values01: np.ndarray) -> np.ndarray:
    """``values01`` snapped to the colormap entry matplotlib picks (``floor(v * 256)``, 1 -> 255), as ``k / 255``:
    :func:`~maivar.audio.raster.apply_colormap` then looks up exactly that entry."""
    return np.minimum(np.floor(values01 * np.float32(256)), np.float32(255)) / np.float32(255)


def autoscaled_limits(lo: float, hi: float) -> tuple[float, float]:
    """The ``(bottom, top)`` limits matplotlib's autoscale gives data spanning ``[lo, hi]``: 5 % margins, and a
    zero-width range widened to +-0.05 first (``Locator.nonsingular``)."""
    if not hi > lo:
        lo, hi = -0.05, 0.05  # only a silent clip: its waveform and (constant, so 0) curve are all 0
    margin = PYMAIVAR_MARGIN * (hi - lo)
    return lo - margin, hi + margin


def waveplot_envelope(y: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """The envelope ``librosa.display.waveplot`` (librosa 0.8) drew, and its hop: ``(env, hop)``, the peak ``|y|``
    of each ``hop``-sample frame, ``hop = sr // 1000`` for a clip over 50,000 samples (``max_points``,
    ``max_sr``), else 1 (every ``|y|``). Point ``k`` is at time ``k * hop / sr``; the x-limits end at the last."""
    n = len(y)
    hop = max(1, sr // min(1000, (sr * n) // 50000)) if n > 50000 else 1
    n_env = n // hop
    return np.abs(y[: n_env * hop]).reshape(n_env, hop).max(axis=1), hop


def polyline_columns(x: np.ndarray, rows: np.ndarray, size: int, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """The rows a polyline ``half_width`` pixels thick covers in each column: ``(first, last)`` float64 (size,).

    The polyline passes through ``(x[i], rows[i])`` (``x`` non-decreasing, in pixels from the left edge; rows
    with row r's center at r). Column ``c`` (center ``c + 1/2``) shows every part of the line within
    ``half_width`` of its center horizontally, widened by ``half_width`` vertically: the rows whose centers lie in
    that span (a square pen: a steep segment thickens both columns it passes between, as matplotlib's stroke
    does). A curve with several points per column keeps its peaks. A column the line does not reach has
    ``first = inf`` and ``last = -inf``.
    """
    x = np.asarray(x, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.float64)
    left = np.arange(size, dtype=np.float64) + 0.5 - half_width
    right = left + 2 * half_width
    reached = (right >= x[0]) & (left <= x[-1])
    ends = np.interp(np.clip(np.stack([left, right]), x[0], x[-1]), x, rows)  # the line at the window's edges
    lo, hi = ends.min(axis=0), ends.max(axis=0)
    # the vertices inside each window: [i0, i1) of x, reduced pairwise (a sentinel keeps every index valid)
    i0, i1 = np.searchsorted(x, left, "left"), np.searchsorted(x, right, "right")
    bounds = np.stack([i0, i1], axis=1).ravel()
    padded = np.append(rows, np.nan)
    inside = i1 > i0
    lo[inside] = np.fmin(lo, np.fmin.reduceat(padded, bounds)[0::2])[inside]
    hi[inside] = np.fmax(hi, np.fmax.reduceat(padded, bounds)[0::2])[inside]
    first, last = np.ceil(lo - half_width), np.floor(hi + half_width)
    first[~reached], last[~reached] = np.inf, -np.inf
    return first, last


def _column_medians(x: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Per column, the median of the ``values`` at the points ``x`` in it (pixels from the left edge); a column
    with no point takes the value interpolated at its center."""
    cols = np.clip(np.floor(x).astype(np.int64), 0, size - 1)
    order = np.lexsort((values, cols))
    counts = np.bincount(cols, minlength=size)
    starts = np.cumsum(counts) - counts
    medians = np.interp(np.arange(size) + 0.5, x, values)
    has = counts > 0
    medians[has] = values[order][starts[has] + (counts[has] - 1) // 2]
    return medians


def _waveform(env: np.ndarray, top: float, bottom: float, height: int, width: int, outline_half: float):
    """The waveform polygon (``+-env`` over the width) as matplotlib fills and outlines it: ``(fill, outline)``,
    (height, width) bool each. A pixel is filled when the polygon covers most of it (its row within the median
    envelope of its column); the outline is the polygon's edge stroked ``2 * outline_half`` pixels wide, the
    top and bottom edges and the vertical ends."""
    scale = height / (top - bottom)  # rows per amplitude unit; amplitude a sits at row (top - a) * scale - 1/2
    x = np.arange(len(env)) * (width / max(len(env) - 1, 1))
    fill = envelope_layer(_column_medians(x, env, width).astype(np.float32), top, bottom, height)
    zero = top * scale - 0.5
    # each edge as a polyline from the center line out to its first point, along the envelope, back to the center
    xs = np.concatenate([[x[0]], x, [x[-1]]])
    outline = np.zeros((height, width), dtype=bool)
    for sign in (1.0, -1.0):
        rows = np.concatenate([[zero], zero - sign * env * scale, [zero]])
        first, last = polyline_columns(xs, rows, width, outline_half)
        outline |= span_layer(first, last, height)
    return fill, outline


def authors_feature(rep, y: np.ndarray, sr: int, source: np.ndarray | None = None) -> np.ndarray:
    """``rep``'s feature of ``source`` (default ``y``) with librosa 0.8's reflect-padded STFT frames: the feature
    of the reflect-padded signal (``np.pad(y, n_fft // 2, mode='reflect')``, as ``librosa.stft`` padded it)
    over the frames centered on ``y``'s own ``0, hop, 2 hop, ...`` samples (``1 + len(y) // hop`` of them). The
    statistics that span frames (scaling, tuning, dB reference) see exactly those frames."""
    a = PYMAIVAR_ANALYSIS
    pad = a.n_fft // 2
    assert pad % a.hop_length == 0  # the padded signal's frames then fall on y's
    x = y if source is None else source
    first = pad // a.hop_length
    frames = np.arange(first, first + 1 + len(x) // a.hop_length)
    return rep.feature(np.pad(x, pad, mode="reflect"), sr, a, frames)


def figure_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels of a ``width x height`` figure inside matplotlib's default plot area: ``(top, bottom, left,
    right)``, bottom and right exclusive (the rows and columns whose centers lie in the axes' box)."""
    left, right, bottom, top = PYMAIVAR_SUBPLOT
    x0, x1 = left * width, right * width
    y0, y1 = (1 - top) * height, (1 - bottom) * height  # from the figure's top
    return (int(np.ceil(y0 - 0.5)), int(np.ceil(y1 - 0.5)), int(np.ceil(x0 - 0.5)), int(np.ceil(x1 - 0.5)))


def figure_pixels(figure_inches: tuple[float, float]) -> tuple[int, int]:
    """``(width, height)`` in pixels of a figure of ``figure_inches`` at 72 dpi."""
    return int(round(figure_inches[0] * PYMAIVAR_DPI)), int(round(figure_inches[1] * PYMAIVAR_DPI))


def plot_area(y: np.ndarray, sr: int, representation: str, *, height: int, width: int,
              pixel_mapping: str) -> np.ndarray:
    """The plot area (the axes, off) of the authors' figure: ``(height, width, 3)`` uint8, lines in points at 72
    dpi. ``y`` at its native rate ``sr`` (``librosa.load(sr=None)``). See the module docstring."""
    rep = get_representation(representation)
    y, _ = clean_audio(y, PYMAIVAR_ANALYSIS.n_fft)
    if rep.kind == "matrix":
        # specshow: every frame computed (Normalize, the scaling and the tuning see them all), frame f the f-th
        # of equal cells over the width
        m = authors_feature(rep, y, sr)
        # (librosa's DCT gives a constant frame, e.g. silence, exact zeros above coefficient 0; our float32 product
        # leaves ~1e-8 of coefficient 0, which must not count as a sign)
        cmap = PYMAIVAR_COLORMAPS.get(rep.name) or specshow_cmap(m, atol=1e-6 * float(np.abs(m).max()))
        return matrix_image(matplotlib_levels(minmax(m)), uniform_map(m.shape[1], width, pixel_mapping), height,
                            pixel_mapping, cmap)

    env, env_hop = waveplot_envelope(y, sr)  # its points span the width: waveplot set the x-limits to them
    peak = float(env.max())
    points = PYMAIVAR_DPI / 72  # pixels a point
    outline_half = PYMAIVAR_OUTLINE_POINTS * points / 2
    background, wave = hex_rgb(PYMAIVAR_BACKGROUND), hex_rgb(PYMAIVAR_WAVEFORM)
    shape = (height, width)
    if rep.kind == "wave":
        bottom, top = autoscaled_limits(-peak, peak)
        fill, outline = _waveform(env, top, bottom, height, width, outline_half)
        return composite(shape, background, [(fill | outline, wave, 1.0)], agg=True)
    offset = PYMAIVAR_SIGNAL_OFFSETS.get(rep.name)
    curve = minmax(authors_feature(rep, y, sr, y + np.float32(offset) if offset else None))
    # the 0..1 curve on the waveform's own axis: the limits cover both
    bottom, top = autoscaled_limits(min(-peak, float(curve.min())), max(peak, float(curve.max())))
    fill, outline = _waveform(env, top, bottom, height, width, outline_half)
    # frame f at f * hop / 22050 s on an axis spanning the waveform's duration at sr (past it: clipped away)
    duration = (len(env) - 1) * env_hop / sr
    x = np.arange(len(curve)) * (PYMAIVAR_ANALYSIS.hop_length / PYMAIVAR_CURVE_TIME_RATE) * (width / duration)
    rows = (top - curve.astype(np.float64)) * (height / (top - bottom)) - 0.5
    first, last = polyline_columns(x, rows, width, PYMAIVAR_CURVE_POINTS * points / 2)
    alpha = PYMAIVAR_FADED_ALPHA
    return composite(shape, background, [(fill, wave, alpha), (outline, wave, alpha),
                                         (span_layer(first, last, height), hex_rgb(PYMAIVAR_CURVE), 1.0)], agg=True)


def render_pymaivar(y: np.ndarray, sr: int, representation: str, *, size: int, pixel_mapping: str,
                    figure_inches: tuple[float, float] = PYMAIVAR_FIGURE_INCHES) -> np.ndarray:
    """One clip's image as the authors' notebooks drew and loaded it: ``(size, size, 3)`` uint8.

    The ``figure_inches`` figure at 72 dpi, white, with the plot area (:func:`plot_area`) at matplotlib's
    default margins (:func:`figure_box`), resized to ``size x size`` (PIL's bilinear, as their loader's
    ``Resize``). Memory: the figure's pixels (bounded by ``render.figure_inches``' range), whatever the clip.
    """
    from PIL import Image

    width, height = figure_pixels(figure_inches)
    top, bottom, left, right = figure_box(width, height)
    figure = np.full((height, width, 3), 255, dtype=np.uint8)
    figure[top:bottom, left:right] = plot_area(y, sr, representation, height=bottom - top, width=right - left,
                                               pixel_mapping=pixel_mapping)
    if (width, height) == (size, size):
        return figure
    return np.asarray(Image.fromarray(figure).resize((size, size), Image.BILINEAR))


__all__ = ["PYMAIVAR_ANALYSIS", "PYMAIVAR_FIGURE_INCHES", "render_pymaivar", "plot_area", "authors_feature",
           "figure_box", "figure_pixels", "specshow_cmap", "matplotlib_levels", "autoscaled_limits",
           "waveplot_envelope", "polyline_columns"]
