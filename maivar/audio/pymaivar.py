"""Recipe ``pymaivar``: the audio images as the authors' toolbox PyMAiVAR drew them, without a figure.

PyMAiVAR (``code/core.py``: librosa 0.8 and one matplotlib figure per clip) drew each representation into a
figure; :func:`render_pymaivar` reproduces the plot area full-bleed at ``size x size`` (the tests compare it
with matplotlib running their code path). Their choices:

- each WAV at its own rate (``librosa.load(sr=None)``); librosa's defaults ``n_fft`` 2048, hop 512, 20 MFCCs;
  the chromagram's tuning estimated per clip; their colors (matplotlib's C0 waveform, a red curve, the
  waveform at alpha 0.4 under it). ``render.sample_rate``, ``n_fft``, ``hop_length``, ``n_mfcc``,
  ``chroma_tuning``, ``colormaps``, ``colors`` and ``faded_alpha`` are not used; ``size``, ``line_width`` and
  ``pixel_mapping`` (for the matrices; the curves are drawn as polylines) are.
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
  rows the line reaches near it, ``line_width`` thick: :func:`polyline_columns`). The roll-off is computed on
  ``y + 0.01``. Colors are blended as matplotlib's Agg renderer blends them (8-bit, truncating).
- Line widths: ``line_width`` pixels stand for the curve's 1.5 points (2.08 pixels at 100 dpi), the outline's
  1 point is two thirds of it.
- the matrices (``mfcc``, ``mfcc_scaled``, ``chromagram``, and our ``melspectrogram`` drawn the same way):
  ``specshow``: all frames computed, frame ``f`` of ``n`` the f-th of ``n`` equal cells across the width
  (:func:`~maivar.audio.raster.uniform_map`), colors normalized over all of them; the colormap is the one
  ``librosa.display.cmap`` picks per clip (:func:`specshow_cmap`: ``coolwarm`` for data of both signs,
  ``magma`` otherwise; the mel spectrogram in dB below its maximum always gets ``magma``), but the
  chromagram's, ``coolwarm`` as the authors gave it; each value takes the colormap entry matplotlib gives it
  (``floor(v * 256)``, :func:`matplotlib_levels`).

Measured against matplotlib running their code path (librosa 0.11's ``waveshow`` standing in for ``waveplot``)
at 64 to 224 pixels: the matrices pixel for pixel; the waveform and curves but for the pixels Agg antialiases at
their edges (97 % and 85 % of the pixels identical, the red curve within a row).
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


def _waveform(env: np.ndarray, top: float, bottom: float, size: int, outline_half: float):
    """The waveform polygon (``+-env`` over the width) as matplotlib fills and outlines it: ``(fill, outline)``,
    (size, size) bool each. A pixel is filled when the polygon covers most of it (its row within the median
    envelope of its column); the outline is the polygon's edge stroked ``2 * outline_half`` pixels wide, the
    top and bottom edges and the vertical ends."""
    scale = size / (top - bottom)  # rows per amplitude unit; amplitude a sits at row (top - a) * scale - 1/2
    x = np.arange(len(env)) * (size / max(len(env) - 1, 1))
    fill = envelope_layer(_column_medians(x, env, size).astype(np.float32), top, bottom, size)
    zero = top * scale - 0.5
    # each edge as a polyline from the center line out to its first point, along the envelope, back to the center
    xs = np.concatenate([[x[0]], x, [x[-1]]])
    outline = np.zeros((size, size), dtype=bool)
    for sign in (1.0, -1.0):
        rows = np.concatenate([[zero], zero - sign * env * scale, [zero]])
        first, last = polyline_columns(xs, rows, size, outline_half)
        outline |= span_layer(first, last, size)
    return fill, outline


def render_pymaivar(y: np.ndarray, sr: int, representation: str, *, size: int, pixel_mapping: str,
                    line_width: int) -> np.ndarray:
    """One clip's image as PyMAiVAR drew it (the plot area, full-bleed): ``(size, size, 3)`` uint8.

    ``y`` at its native rate ``sr`` (``librosa.load(sr=None)``). See the module docstring.
    ``line_width`` (pixels) is the curve's 1.5 points; the waveform's outline is 1 point.
    """
    rep = get_representation(representation)
    y, _ = clean_audio(y, PYMAIVAR_ANALYSIS.n_fft)
    if rep.kind == "matrix":
        # specshow: every frame computed (Normalize, the scaling and the tuning see them all), frame f the f-th
        # of equal cells over the width
        m = rep.feature(y, sr, PYMAIVAR_ANALYSIS)
        # (librosa's DCT gives a constant frame, e.g. silence, exact zeros above coefficient 0; our float32 product
        # leaves ~1e-8 of coefficient 0, which must not count as a sign)
        cmap = PYMAIVAR_COLORMAPS.get(rep.name) or specshow_cmap(m, atol=1e-6 * float(np.abs(m).max()))
        return matrix_image(matplotlib_levels(minmax(m)), uniform_map(m.shape[1], size, pixel_mapping), size,
                            pixel_mapping, cmap)

    env, env_hop = waveplot_envelope(y, sr)  # its points span the width: waveplot set the x-limits to them
    peak = float(env.max())
    outline_half = line_width * PYMAIVAR_OUTLINE_POINTS / PYMAIVAR_CURVE_POINTS / 2
    background, wave = hex_rgb(PYMAIVAR_BACKGROUND), hex_rgb(PYMAIVAR_WAVEFORM)
    if rep.kind == "wave":
        bottom, top = autoscaled_limits(-peak, peak)
        fill, outline = _waveform(env, top, bottom, size, outline_half)
        return composite(size, background, [(fill | outline, wave, 1.0)], agg=True)
    offset = PYMAIVAR_SIGNAL_OFFSETS.get(rep.name)
    source = y + np.float32(offset) if offset else y
    curve = minmax(rep.feature(source, sr, PYMAIVAR_ANALYSIS))
    # the 0..1 curve on the waveform's own axis: the limits cover both
    bottom, top = autoscaled_limits(min(-peak, float(curve.min())), max(peak, float(curve.max())))
    fill, outline = _waveform(env, top, bottom, size, outline_half)
    # frame f at f * hop / 22050 s on an axis spanning the waveform's duration at sr (past it: clipped away)
    duration = (len(env) - 1) * env_hop / sr
    x = np.arange(len(curve)) * (PYMAIVAR_ANALYSIS.hop_length / PYMAIVAR_CURVE_TIME_RATE) * (size / duration)
    rows = (top - curve.astype(np.float64)) * (size / (top - bottom)) - 0.5
    first, last = polyline_columns(x, rows, size, line_width / 2)
    alpha = PYMAIVAR_FADED_ALPHA
    return composite(size, background, [(fill, wave, alpha), (outline, wave, alpha),
                                        (span_layer(first, last, size), hex_rgb(PYMAIVAR_CURVE), 1.0)], agg=True)


__all__ = ["PYMAIVAR_ANALYSIS", "render_pymaivar", "specshow_cmap", "matplotlib_levels", "autoscaled_limits",
           "waveplot_envelope", "polyline_columns"]
