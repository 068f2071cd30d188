"""Audio images: the paper's six representations of a clip's audio (Fig. 5, Table II), rasterised.

``render(y, sr, representation, ...)`` turns one clip's mono waveform into a ``size x size x 3`` uint8
image, full-bleed (no margins, no axes), without a matplotlib figure: the features are librosa's (its
filterbanks, dB scale and DCT; the STFT frames through ``torch.fft.rfft`` and the centroid / roll-off formulas
written out, all tested equal to librosa's own functions) and are drawn straight into a numpy array.
``render.recipe`` picks the drawing: ``corrected`` (the default, described first) or ``pymaivar`` (the
authors' own drawing, see "Recipes" below).

=====================  ==============================================================================
representation         what the image shows
=====================  ==============================================================================
``waveplot``           the amplitude envelope, as ``librosa.display.waveshow`` draws a long clip: per
                       column the peak ``|y|``, filled symmetrically about the centre line
``spectral_centroid``  the waveplot faded (``faded_alpha``) with the min-max normalised spectral centroid
                       curve on top (``curve`` colour), time-aligned with the waveform
``spectral_rolloff``   the same with the spectral roll-off (85 %)
``mfcc``               ``librosa.feature.mfcc`` (``n_mfcc`` coefficients) through a colormap,
                       coefficient 0 at the bottom
``mfcc_scaled``        the same after per-coefficient standardisation (the paper's "MFCCs feature
                       scaling", ``sklearn.preprocessing.scale(mfcc, axis=1)``)
``chromagram``         ``librosa.feature.chroma_stft`` (12 pitch classes, C at the bottom, B at the top)
                       through ``coolwarm``, as the authors drew it
=====================  ==============================================================================

The pixel mapping (one rule, :func:`axis_weights`, used by every representation)
---------------------------------------------------------------------------------
Every axis is an interval cut into cells: the source cells (samples, STFT frames, feature bins) and the
destination cells (pixel columns or rows). ``render.pixel_mapping`` picks how a pixel gets its value:

- ``nearest`` (default): the cell under the pixel's centre, as matplotlib rasterises ``specshow`` in the
  authors' route (each quad filled, no antialiasing). Only the STFT frames some column shows are computed:
  at most ``size`` of them, whatever the clip's length (a 7 s clip at 44.1 kHz has 603 frames).
- ``area``: the average of the cells weighted by how much of the pixel each one covers (box resampling;
  every frame is computed and contributes).

Either way a source cell wider than a pixel is repeated.

- **Time -> columns.** The whole clip (``N`` samples, after padding to at least one FFT frame) spans the
  full width: column ``c`` of ``W`` covers samples ``[c N / W, (c + 1) N / W)``, the start of the clip at
  the left edge, its end at the right edge; one image per clip whatever its length, as in the paper.
  STFT frame ``f`` is centred on sample ``f * hop_length`` (librosa's ``center=True``) and covers samples
  ``[(f - 1/2) hop, (f + 1/2) hop)`` clipped to the clip, so that frame-based features (the MFCC and chroma
  matrices, the centroid and roll-off curves) land on the columns of the samples they describe, computed
  from the actual sample rate and hop length (not the authors' mismatched default-rate frame times).
  :func:`time_map` gives the frames to compute and their weights.
- **Feature bins -> rows.** Bin ``k`` of ``K`` covers rows ``[(K - k - 1) H / K, (K - k) H / K)`` from
  the top: bin 0 (the lowest coefficient or pitch class C) at the bottom (:func:`bin_map`).
- **Values -> colours.** Matrices are min-max normalised over the frames computed (matplotlib's default
  ``Normalize`` in ``specshow``; with ``nearest``, over the frames shown) and looked up in a 256-entry
  colormap table taken once from matplotlib's registry. Curves are min-max normalised (the authors'
  ``minmax_scale``) and drawn over the full height: 0 at the bottom row, 1 at the top row. The waveform is
  scaled so the clip's peak reaches the top and bottom edges.

Degenerate audio is well defined: a constant (e.g. silent) matrix or curve normalises to 0, a silent
waveform draws as the centre line, audio shorter than ``n_fft`` is zero-padded at the end to ``n_fft``
samples, and non-finite samples are replaced by 0 (:func:`clean_audio`, which counts them). No output
pixel is ever NaN: images are uint8.

Recipes (``render.recipe``)
---------------------------
- ``corrected`` (default): the drawing above; every curve time-aligned with its waveform.
- ``pymaivar``: what the authors' toolbox PyMAiVAR (``code/core.py``: librosa 0.8 and one matplotlib figure per
  clip) drew, reproduced full-bleed: the plot area only, at ``size x size``, still without a figure
  (:func:`render_pymaivar`; the tests compare it with matplotlib running their code path). Their choices:

  - each WAV at its own rate (``librosa.load(sr=None)``); librosa's defaults ``n_fft`` 2048, hop 512, 20 MFCCs;
    the chromagram's tuning estimated per clip; their colours (matplotlib's C0 waveform, a red curve, the
    waveform at alpha 0.4 under it). ``render.sample_rate``, ``n_fft``, ``hop_length``, ``n_mfcc``,
    ``chroma_tuning``, ``colormaps``, ``colors`` and ``faded_alpha`` are not used; ``size``,
    ``line_width`` and ``pixel_mapping`` (for the matrices; the curves are drawn as polylines) are.
  - ``waveplot``: ``waveplot``'s envelope (the peak ``|y|`` of each ``sr // 1000``-sample frame for a clip over
    50,000 samples, of each sample otherwise: :func:`waveplot_envelope`) across the width (``waveplot`` set the
    x-limits to its points), on a y-axis autoscaled by matplotlib: ``+-1.1 x peak`` (5 % margins), so it fills
    1/1.1 of the height. A pixel is filled when the polygon covers most of it (its column's median envelope
    reaches the row's centre), and the polygon's 1-point outline is stroked too (``fill_between`` was given the
    colour, which colours the edge): with alpha 0.4 the outline shows as a darker band along the envelope.
  - ``spectral_centroid`` / ``spectral_rolloff``: that waveform at alpha 0.4 and, on the same axis, the
    min-max normalised curve (0..1; the limits autoscale over ``[-peak, max(peak, 1)]`` plus 5 %, so the curve
    sits in the upper half). Frame ``f`` is drawn at ``frames_to_time(f)`` = ``f * 512 / 22050`` s (librosa's
    default rate) while the axis spans the clip at its own rate: for 44.1 kHz audio the curve's first half
    fills the width and the rest is clipped away. Every vertex of the polyline counts (a column spans the
    rows the line reaches near it, ``line_width`` thick: :func:`polyline_columns`). The roll-off is computed
    on ``y + 0.01``. Colours are blended as matplotlib's Agg renderer blends them (8-bit, truncating).
  - Line widths: ``line_width`` pixels stand for the curve's 1.5 points (2.08 pixels at 100 dpi), the
    outline's 1 point is two thirds of it.
  - ``mfcc``, ``mfcc_scaled``, ``chromagram``: ``specshow``: all frames computed, frame ``f`` of ``n`` the f-th
    of ``n`` equal cells across the width (:func:`uniform_map`), colours normalised over all of them; the MFCCs'
    colormap is the one ``librosa.display.cmap`` picks per clip (:func:`specshow_cmap`: ``coolwarm`` for data of
    both signs, ``magma`` otherwise), the chromagram's ``coolwarm``; each value takes the colormap entry
    matplotlib gives it (``floor(v * 256)``, :func:`matplotlib_levels`).

  Measured against matplotlib running their code path (librosa 0.11's ``waveshow`` standing in for
  ``waveplot``) at 64 to 224 pixels: the matrices pixel for pixel; the waveform and curves but for the pixels
  Agg antialiases at their edges (97 % and 85 % of the pixels identical, the red curve within a row).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from maivar.core import rejections
from maivar.core.errors import PipelineError
from maivar.core.rejections import ClipFailure

# librosa and matplotlib are imported lazily (inside the functions) so that importing this module is cheap.

# The paper's six audio-image representations (Fig. 5, Table II), in the paper's order.
REPRESENTATIONS = ("waveplot", "spectral_centroid", "spectral_rolloff", "mfcc", "mfcc_scaled", "chromagram")


def check_representation(name: str) -> str:
    """``name`` if it is one of :data:`REPRESENTATIONS`, else a one-line :class:`PipelineError`."""
    if name not in REPRESENTATIONS:
        raise PipelineError(f"unknown representation {name!r}: choose one of {', '.join(REPRESENTATIONS)}")
    return name


@dataclass(frozen=True)
class Style:
    """How curves and waveforms are drawn (colours as ``#rrggbb``), and the matrices' colormaps."""

    colormaps: dict  # representation -> matplotlib colormap name (mfcc, mfcc_scaled, chromagram)
    waveform: str
    curve: str
    background: str
    faded_alpha: float
    line_width: int


# ---------------------------------------------------------------------------------------------- audio


def load_audio(path, sample_rate: int) -> tuple[np.ndarray, int]:
    """Read a WAV (any rate, any channels), mix down to mono, resample to ``sample_rate``.

    Returns ``(y, n)``: float32 1-D audio and the number of non-finite samples (NaN/inf, possible in a float
    WAV) that were replaced by 0 before mixing and resampling. Raises
    :class:`~maivar.core.rejections.ClipFailure` (``missing_file``, ``empty_file`` or ``unreadable_audio``).
    """
    y, native_rate, n_bad = read_audio(path)
    if native_rate != sample_rate:
        import librosa

        y = librosa.resample(y, orig_sr=native_rate, target_sr=sample_rate)
    return np.ascontiguousarray(y, dtype=np.float32), n_bad


def read_audio(path) -> tuple[np.ndarray, int, int]:
    """A WAV at its own rate (``librosa.load(path, sr=None)``, the ``pymaivar`` recipe): ``(y, rate, n)``,
    mono float32 audio (the channel mean), its sample rate and the number of non-finite samples replaced by 0.
    Raises :class:`~maivar.core.rejections.ClipFailure` as :func:`load_audio` does."""
    import os

    import soundfile as sf

    if not os.path.isfile(path):
        raise ClipFailure(rejections.MISSING_FILE, f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise ClipFailure(rejections.EMPTY_FILE, f"{path} is 0 bytes")
    try:
        data, native_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types for a damaged file
        raise ClipFailure(rejections.UNREADABLE_AUDIO,
                          f"{path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if data.shape[0] == 0:
        raise ClipFailure(rejections.EMPTY_FILE, f"{path} holds no samples")
    n_bad = 0
    if not np.isfinite(data).all():
        bad = ~np.isfinite(data)
        n_bad = int(bad.sum())
        data[bad] = 0.0
    y = data[:, 0].copy()
    for channel in range(1, data.shape[1]):  # the channel mean; numpy's mean(axis=1) is 50x slower here
        y += data[:, channel]
    if data.shape[1] > 1:
        y /= data.shape[1]
    return y, int(native_rate), n_bad


def clean_audio(y: np.ndarray, n_fft: int) -> tuple[np.ndarray, int]:
    """Replace non-finite samples by 0 and zero-pad to at least ``n_fft`` samples.

    Returns ``(y, number of non-finite samples replaced)``.
    """
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    n_bad = 0
    with np.errstate(invalid="ignore", over="ignore"):
        total = y.sum()
    if not np.isfinite(total):  # a NaN or inf makes the sum non-finite (an overflow only costs the exact test)
        bad = ~np.isfinite(y)
        n_bad = int(bad.sum())
        y = np.where(bad, np.float32(0), y)
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    return np.ascontiguousarray(y), n_bad


# ------------------------------------------------------------------------------------ pixel mapping


PIXEL_MAPPINGS = ("nearest", "area")


def overlap_weights(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """``area`` mapping: ``W[p, s]`` = share of pixel ``p`` covered by cell ``s``.

    ``src_edges`` (S + 1) and ``dst_edges`` (P + 1) are increasing cell boundaries on the same axis (e.g.
    samples). Rows sum to 1, so ``W @ values`` is the area average of the cells under each pixel. A pixel
    that no cell covers (cannot happen when both span the same interval) takes its nearest cell.
    """
    src = np.asarray(src_edges, dtype=np.float64)
    dst = np.asarray(dst_edges, dtype=np.float64)
    lo = np.maximum(dst[:-1, None], src[None, :-1])
    hi = np.minimum(dst[1:, None], src[None, 1:])
    w = np.clip(hi - lo, 0.0, None)
    total = w.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    if empty.any():
        centres = (src[:-1] + src[1:]) / 2
        for p in np.flatnonzero(empty):
            w[p, np.argmin(np.abs(centres - (dst[p] + dst[p + 1]) / 2))] = 1.0
        total = w.sum(axis=1, keepdims=True)
    return w / total


def nearest_weights(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """``nearest`` mapping: ``W[p, s]`` = 1 for the cell ``s`` under pixel ``p``'s centre, else 0.

    A centre on a boundary belongs to the later cell; a centre outside every cell takes the first or last.
    This is how matplotlib rasterises ``specshow``'s quads (no antialiasing): each pixel shows one cell.
    """
    src = np.asarray(src_edges, dtype=np.float64)
    dst = np.asarray(dst_edges, dtype=np.float64)
    centres = (dst[:-1] + dst[1:]) / 2
    cell = np.clip(np.searchsorted(src, centres, side="right") - 1, 0, len(src) - 2)
    w = np.zeros((len(centres), len(src) - 1))
    w[np.arange(len(centres)), cell] = 1.0
    return w


def axis_weights(src_edges: np.ndarray, dst_edges: np.ndarray, mapping: str) -> np.ndarray:
    """THE mapping from source cells to pixels on one axis, used by every representation.

    ``W[p, s]``: the weight of source cell ``s`` in pixel ``p`` (rows sum to 1); ``W @ values`` gives the
    pixels. ``mapping`` is ``nearest`` (:func:`nearest_weights`) or ``area`` (:func:`overlap_weights`).
    """
    check_pixel_mapping(mapping)
    return nearest_weights(src_edges, dst_edges) if mapping == "nearest" else overlap_weights(src_edges, dst_edges)


def check_pixel_mapping(mapping) -> str:
    """``mapping`` if it is one of :data:`PIXEL_MAPPINGS`, else a one-line ValueError listing them."""
    if mapping not in PIXEL_MAPPINGS:
        raise ValueError(f"pixel_mapping must be one of {', '.join(PIXEL_MAPPINGS)}, not {mapping!r}")
    return mapping


def column_edges(n_samples: int, width: int) -> np.ndarray:
    """Column ``c`` covers samples ``[c N / W, (c + 1) N / W)``: the whole clip spans the whole width."""
    return np.linspace(0.0, float(n_samples), width + 1)


def frame_edges(n_frames: int, hop_length: int, n_samples: int) -> np.ndarray:
    """Frame ``f`` (centred on sample ``f * hop``) covers ``[(f - 1/2) hop, (f + 1/2) hop)`` within the clip."""
    edges = (np.arange(n_frames + 1, dtype=np.float64) - 0.5) * hop_length
    return np.clip(edges, 0.0, float(n_samples))


@functools.lru_cache(maxsize=64)
def time_map(n_samples: int, hop_length: int, width: int, mapping: str) -> tuple[np.ndarray, np.ndarray]:
    """STFT frames -> columns for a clip of ``n_samples`` (>= n_fft, so ``1 + n_samples // hop`` frames).

    Returns ``(frames, W)``: the frames some column shows (sorted; all of them for ``area``, at most
    ``width`` for ``nearest``) and the ``(width, len(frames))`` float32 weights. Only these frames need
    computing. Cached: read-only arrays.
    """
    n_frames = 1 + n_samples // hop_length
    w = axis_weights(frame_edges(n_frames, hop_length, n_samples), column_edges(n_samples, width), mapping)
    frames = np.flatnonzero(w.any(axis=0))
    w = np.ascontiguousarray(w[:, frames], dtype=np.float32)
    frames.flags.writeable = w.flags.writeable = False
    return frames, w


@functools.lru_cache(maxsize=64)
def uniform_map(n_cells: int, n_pixels: int, mapping: str) -> np.ndarray:
    """``n_cells`` equal cells spread over ``n_pixels``, cell 0 at pixel 0: float32 ``(n_pixels, n_cells)``
    weights (read-only). What ``specshow`` does on every axis it draws, feature bins and (``pymaivar``) frames."""
    w = axis_weights(np.arange(n_cells + 1), np.linspace(0.0, float(n_cells), n_pixels + 1), mapping)
    w = np.ascontiguousarray(w, dtype=np.float32)
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=64)
def bin_map(n_bins: int, height: int, mapping: str) -> np.ndarray:
    """Feature bins -> rows from the top: row 0 shows the highest bin, the last row bin 0. (height, n_bins)."""
    w = np.ascontiguousarray(uniform_map(n_bins, height, mapping)[::-1])
    w.flags.writeable = False
    return w


def matrix_to_pixels(matrix: np.ndarray, time_weights: np.ndarray, size: int, mapping: str) -> np.ndarray:
    """A (bins x frames) feature matrix (the frames of :func:`time_map`) -> (size x size) float32."""
    rows = bin_map(matrix.shape[0], size, mapping)
    return rows @ (matrix.astype(np.float32) @ time_weights.T)  # frames first: 10x fewer operations


def matrix_image(matrix01: np.ndarray, time_weights: np.ndarray, size: int, mapping: str, cmap: str) -> np.ndarray:
    """A (bins x frames) matrix scaled to [0, 1] -> the (size, size, 3) uint8 image through colormap ``cmap``.

    With ``nearest`` every pixel shows one matrix entry: the entries each column shows are coloured first
    (one row per bin), then each bin's row is repeated over the rows it covers (the same pixels as
    :func:`matrix_to_pixels` then the colormap, several times faster).
    """
    if mapping != "nearest":
        return apply_colormap(matrix_to_pixels(matrix01, time_weights, size, mapping), cmap)
    rows = bin_map(matrix01.shape[0], size, mapping).argmax(axis=1)  # the bin of each row, top to bottom
    starts = np.flatnonzero(np.diff(rows, prepend=-1))  # runs of rows showing the same bin
    counts = np.diff(np.append(starts, size))
    shown = matrix01[rows[starts]][:, time_weights.argmax(axis=1)]  # (runs, size): bin x column
    return np.repeat(apply_colormap(shown, cmap), counts, axis=0)


def curve_to_columns(curve: np.ndarray, time_weights: np.ndarray) -> np.ndarray:
    """A per-frame curve (the frames of :func:`time_map`) -> one value per column."""
    return time_weights @ curve.astype(np.float32)


def envelope_columns(y: np.ndarray, width: int) -> np.ndarray:
    """Peak ``|y|`` over each column's samples (``[floor(c N / W), ceil((c + 1) N / W))``), float32 (W,)."""
    n = len(y)
    edges = column_edges(n, width)
    start = np.floor(edges[:-1]).astype(np.int64)
    stop = np.maximum(np.ceil(edges[1:]).astype(np.int64), start + 1)
    a = np.abs(y)
    if n >= 2 * width:
        # reduceat over the floor partition, then fold in each column's last partial sample.
        env = np.maximum.reduceat(a, start)
        env = np.maximum(env, a[np.minimum(stop - 1, n - 1)])
    else:
        env = np.array([a[s:e].max() for s, e in zip(start, stop, strict=True)], dtype=np.float32)
    return env.astype(np.float32)


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the whole array; a constant array becomes 0 (never NaN)."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


# ------------------------------------------------------------------------------------------ colours


@functools.lru_cache(maxsize=16)
def colormap_lut(name: str) -> np.ndarray:
    """A matplotlib colormap as a (256, 3) uint8 table, read once from the registry (no figure)."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {name!r}") from None
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


def hex_rgb(colour: str) -> np.ndarray:
    c = colour.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour {colour!r} is not #rrggbb")
    return np.array([int(c[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)


def apply_colormap(values01: np.ndarray, name: str) -> np.ndarray:
    idx = np.clip(np.rint(values01 * 255.0), 0, 255).astype(np.uint8)
    return np.take(colormap_lut(name), idx, axis=0)


# ----------------------------------------------------------------------------------------- features


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int):
    import torch

    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def frame_spectra(y: np.ndarray, n_fft: int, hop_length: int, frames: np.ndarray | None = None):
    """Rows of ``librosa.stft(y, n_fft, hop_length)`` (Hann window, centred frames, zero padding) as a
    frames-major complex64 torch tensor ``(len(frames), 1 + n_fft // 2)``; ``frames=None`` means all
    ``1 + len(y) // hop_length`` frames.

    Only the requested frames are gathered and transformed (``torch.fft.rfft`` on one batch: 2-3x faster
    than numpy's FFT on one core). Frames wholly inside the clip are read straight from ``y``; only those
    that reach past an end are zero-padded. The tests check the result equals librosa's STFT.
    """
    import torch

    n = len(y)
    n_frames = 1 + n // hop_length
    frames = np.arange(n_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    signal = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    starts = frames * hop_length - n_fft // 2  # sorted: edge frames come first and last
    inside = (starts >= 0) & (starts + n_fft <= n)
    windows = torch.empty((len(frames), n_fft), dtype=torch.float32)
    if inside.any():
        first, last = int(np.argmax(inside)), len(inside) - int(np.argmax(inside[::-1]))
        torch.index_select(signal.unfold(0, n_fft, 1), 0, torch.from_numpy(starts[first:last]),
                           out=windows[first:last])
        edges = [i for i in range(len(frames)) if not first <= i < last]
    else:
        edges = range(len(frames))
    for i in edges:
        lo, hi = max(int(starts[i]), 0), min(int(starts[i]) + n_fft, n)
        windows[i].zero_()
        windows[i, lo - int(starts[i]) : hi - int(starts[i])] = signal[lo:hi]
    return torch.fft.rfft(windows.mul_(_hann(n_fft)))


def squared_spectra(y: np.ndarray, n_fft: int, hop_length: int, frames: np.ndarray | None = None) -> np.ndarray:
    """``(len(frames), 2 * (1 + n_fft // 2))`` float32: the squared real and imaginary parts of each STFT bin,
    interleaved (``re_0^2, im_0^2, re_1^2, ...``). A filterbank over the power spectrum is a product with
    this and the filterbank's rows repeated twice (:class:`Filterbank`), without forming ``|X|^2`` first."""
    import torch

    spectra = torch.view_as_real(frame_spectra(y, n_fft, hop_length, frames))
    return spectra.mul_(spectra).reshape(spectra.shape[0], -1).numpy()


def magnitude_spectrogram(y: np.ndarray, n_fft: int, hop_length: int, frames: np.ndarray | None = None
                          ) -> np.ndarray:
    """``|librosa.stft(y, n_fft, hop_length)|[:, frames]``, float32 (bins x frames)."""
    return np.ascontiguousarray(frame_spectra(y, n_fft, hop_length, frames).abs().numpy().T)


def power_spectrogram(y: np.ndarray, n_fft: int, hop_length: int, frames: np.ndarray | None = None) -> np.ndarray:
    """``|librosa.stft(y, n_fft, hop_length)[:, frames]| ** 2``, float32 (bins x frames)."""
    sq = squared_spectra(y, n_fft, hop_length, frames)
    return np.ascontiguousarray((sq[:, 0::2] + sq[:, 1::2]).T)


class Filterbank:
    """A (filters x bins) filterbank applied to :func:`squared_spectra`: ``apply(sq) == (basis @ power).T``.

    Stored as dense blocks of 128 interleaved columns, each with only the filters it touches (a mel filter
    covers a few bins), so the product is a handful of small dense GEMMs on the frames-major array, with no
    transposed copy of the spectrogram: for librosa's 128-band mel bank at n_fft 2048, 4.4 M multiply-adds
    per 224 frames instead of 58.8 M for the dense product on the interleaved squares.
    """

    BLOCK = 128

    def __init__(self, basis: np.ndarray):
        doubled = np.repeat(np.asarray(basis, dtype=np.float32), 2, axis=1)  # a weight for re^2 and im^2
        self.n_filters = doubled.shape[0]
        self.blocks = []
        for c0 in range(0, doubled.shape[1], self.BLOCK):
            block = doubled[:, c0 : c0 + self.BLOCK]
            rows = np.flatnonzero(np.abs(block).sum(axis=1))
            if len(rows):
                lo, hi = int(rows[0]), int(rows[-1]) + 1
                self.blocks.append((c0, c0 + block.shape[1], lo, hi, np.ascontiguousarray(block[lo:hi].T)))

    def apply(self, squared: np.ndarray) -> np.ndarray:
        """``(frames, 2 * bins)`` interleaved squares -> ``(frames, filters)`` float32."""
        out = np.zeros((squared.shape[0], self.n_filters), dtype=np.float32)
        for c0, c1, lo, hi, weights in self.blocks:
            out[:, lo:hi] += squared[:, c0:c1] @ weights
        return out


@functools.lru_cache(maxsize=8)
def _mel_bank(sr: int, n_fft: int) -> Filterbank:
    """librosa's mel filterbank (``librosa.filters.mel``: 128 bands, Slaney), built once per process."""
    import librosa

    return Filterbank(librosa.filters.mel(sr=sr, n_fft=n_fft))


@functools.lru_cache(maxsize=8)
def _chroma_bank(sr: int, n_fft: int, tuning: float) -> Filterbank:
    import librosa

    return Filterbank(librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning))


@functools.lru_cache(maxsize=8)
def _fft_frequencies(sr: int, n_fft: int) -> np.ndarray:
    import librosa

    return librosa.fft_frequencies(sr=sr, n_fft=n_fft).astype(np.float32)


def feature_matrix(y: np.ndarray, sr: int, representation: str, *, n_fft: int, hop_length: int, n_mfcc: int,
                   chroma_tuning: float | None, frames: np.ndarray | None = None) -> np.ndarray:
    """The (bins x frames) matrix that ``mfcc``, ``mfcc_scaled`` and ``chromagram`` draw.

    Equal to ``librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop_length)`` and
    ``librosa.feature.chroma_stft(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, tuning=chroma_tuning)``
    (tested): librosa's filterbanks (built once per process), dB scale (:func:`power_to_db`) and DCT
    (:func:`_dct_rows`), computed frames-major. With ``frames``, only those columns (both features are per
    frame; ``mfcc_scaled``'s statistics and the estimated tuning are then taken over those frames).
    """
    if representation == "chromagram" and chroma_tuning is None:  # librosa's default: estimate the tuning
        import librosa

        power = power_spectrogram(y, n_fft, hop_length, frames)
        return librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft, hop_length=hop_length)
    squared = squared_spectra(y, n_fft, hop_length, frames)
    if representation == "chromagram":
        chroma = _chroma_bank(sr, n_fft, float(chroma_tuning)).apply(squared)  # (frames, 12)
        peak = chroma.max(axis=1, keepdims=True)  # librosa.util.normalize(norm=inf): each frame's max to 1
        tiny = np.finfo(np.float32).tiny
        return (chroma / np.where(peak < tiny, np.float32(1), peak)).T
    mel_db = power_to_db(_mel_bank(sr, n_fft).apply(squared))
    m = (mel_db @ _dct_rows(n_mfcc, mel_db.shape[1]).T).T
    if representation == "mfcc_scaled":
        m = standardise_rows(m)
    return m


@functools.lru_cache(maxsize=8)
def _dct_rows(n_mfcc: int, n_mels: int) -> np.ndarray:
    """The first ``n_mfcc`` rows of the orthonormal DCT-II matrix: ``M @ x == scipy.fft.dct(x, 2, norm='ortho')
    [:n_mfcc]``, what ``librosa.feature.mfcc`` applies to the dB mel spectrogram (no lifter)."""
    import scipy.fft

    d = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]
    return np.ascontiguousarray(d, dtype=np.float32)


def power_to_db(s: np.ndarray, amin: float = 1e-10, top_db: float = 80.0) -> np.ndarray:
    """``librosa.power_to_db(s)`` with its defaults (ref 1.0, amin 1e-10, top_db 80), without its checks."""
    log_spec = np.log10(np.maximum(s, np.float32(amin)))
    log_spec *= np.float32(10.0)
    return np.maximum(log_spec, log_spec.max() - np.float32(top_db))


def standardise_rows(m: np.ndarray) -> np.ndarray:
    """Per-coefficient zero mean, unit variance (``sklearn.preprocessing.scale(m, axis=1)``; std 0 -> 1)."""
    m = m.astype(np.float64)
    mean = m.mean(axis=1, keepdims=True)
    std = m.std(axis=1, keepdims=True)
    std[std < 10 * np.finfo(np.float64).eps] = 1.0
    return ((m - mean) / std).astype(np.float32)


def feature_curve(y: np.ndarray, sr: int, representation: str, *, n_fft: int, hop_length: int,
                  roll_percent: float = 0.85, frames: np.ndarray | None = None) -> np.ndarray:
    """The per-frame curve (Hz) that ``spectral_centroid`` / ``spectral_rolloff`` draw.

    The definitions of ``librosa.feature.spectral_centroid`` / ``spectral_rolloff`` on the magnitude
    spectrogram, written out (librosa normalises the whole spectrogram first, 5x slower; the tests check
    equality). A silent frame has centroid 0 and roll-off 0.
    """
    squared = squared_spectra(y, n_fft, hop_length, frames)
    spectra = np.sqrt(squared[:, 0::2] + squared[:, 1::2])  # (frames, bins) magnitudes
    freq = _fft_frequencies(sr, n_fft)
    if representation == "spectral_centroid":
        total = spectra.sum(axis=1)
        tiny = np.finfo(np.float32).tiny
        return np.where(total > tiny, (spectra @ freq) / np.maximum(total, tiny), np.float32(0))
    cumulative = np.cumsum(spectra, axis=1)
    reached = cumulative >= roll_percent * cumulative[:, -1:]
    return freq[np.argmax(reached, axis=1)]


# -------------------------------------------------------------------------------------------- render


MATRIX_REPRESENTATIONS = ("mfcc", "mfcc_scaled", "chromagram")


def _envelope_layer(env: np.ndarray, top: float, bottom: float, size: int) -> np.ndarray:
    """(size, size) bool: the pixels whose centre lies between ``-env`` and ``+env`` of their column, on an axis
    from ``top`` (row 0's top edge) down to ``bottom`` (the last row's bottom edge): the filled waveform."""
    amp = top - (np.arange(size, dtype=np.float32) + 0.5) * ((top - bottom) / size)  # each row centre's amplitude
    return np.abs(amp)[:, None] <= env[None, :]


def _waveform_layer(y: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: the symmetric amplitude envelope, peak-normalised; the centre line always."""
    env = envelope_columns(y, size)
    peak = float(env.max())
    env = env / peak if peak > 0 else np.zeros_like(env)
    # the axis spans -1..+1 (peak to the edges); half a row (1 / size) at least: the centre line
    return _envelope_layer(np.maximum(env, 1.0 / size), 1.0, -1.0, size)


def _span_layer(lo: np.ndarray, hi: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: in each column, the rows from ``floor(lo)`` to ``ceil(hi)`` (row coordinates, row r's
    centre at r); a column with ``lo = inf`` stays empty."""
    r = np.arange(size, dtype=np.float32)[:, None]
    return (r >= np.floor(lo)[None, :]) & (r <= np.ceil(hi)[None, :])


def _curve_layer(values01: np.ndarray, size: int, line_width: int) -> np.ndarray:
    """(size, size) bool: a polyline through one value per column, 0 = bottom row, 1 = top row."""
    rows = (1.0 - values01) * (size - 1)
    nxt = np.append(rows[1:], rows[-1])
    # a column spans from its own point to the next one's, so the line stays connected when it jumps.
    return _span_layer(np.minimum(rows, nxt) - (line_width - 1) / 2.0, np.maximum(rows, nxt) + (line_width - 1) / 2.0,
                       size)


def _composite(size: int, background: np.ndarray, layers, agg: bool = False) -> np.ndarray:
    """Layers ``(mask, colour, alpha)`` painted in order over the background: (size, size, 3) uint8.

    ``agg``: blend as matplotlib's Agg renderer does (8-bit alpha, integer arithmetic that truncates; an opaque
    layer is copied) instead of rounding the float blend at the end.
    """
    if agg:
        image = np.empty((size, size, 3), dtype=np.int64)
        image[:] = background.astype(np.int64)
        for mask, colour, alpha in layers:
            a8 = int(round(alpha * 255))
            src = colour.astype(np.int64)
            image[mask] = src if a8 == 255 else (src * 256 * a8 + image[mask] * 255 * (256 - a8)) // (255 * 256 + a8)
        return image.astype(np.uint8)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = background
    for mask, colour, alpha in layers:
        image[mask] = alpha * colour + (1.0 - alpha) * image[mask]
    return np.rint(image).astype(np.uint8)


def _paint(size: int, style: Style, wave: np.ndarray, curve: np.ndarray | None = None) -> np.ndarray:
    """The waveform layer in ``style.waveform`` on the background; with a curve layer, the waveform faded
    (``faded_alpha`` over the background) and the curve on top in ``style.curve``. (size, size, 3) uint8."""
    background, colour = hex_rgb(style.background), hex_rgb(style.waveform)
    if curve is None:
        return _composite(size, background, [(wave, colour, 1.0)])
    return _composite(size, background, [(wave, colour, style.faded_alpha), (curve, hex_rgb(style.curve), 1.0)])


def render(y: np.ndarray, sr: int, representation: str, *, size: int, n_fft: int, hop_length: int, n_mfcc: int,
           chroma_tuning: float | None, style: Style, pixel_mapping: str, recipe: str = "corrected") -> np.ndarray:
    """One clip's audio image: ``(size, size, 3)`` uint8, full-bleed. See the module docstring.

    ``recipe="pymaivar"`` draws as the authors did (:func:`render_pymaivar`: ``n_fft``, ``hop_length``,
    ``n_mfcc``, ``chroma_tuning`` and the style's colours and colormaps are theirs then, not these)."""
    check_representation(representation)
    if check_recipe(recipe) == "pymaivar":
        return render_pymaivar(y, sr, representation, size=size, pixel_mapping=pixel_mapping,
                               line_width=style.line_width)
    y, _ = clean_audio(y, n_fft)
    frames, time_weights = time_map(len(y), hop_length, size, pixel_mapping)
    if representation in MATRIX_REPRESENTATIONS:
        m = feature_matrix(y, sr, representation, n_fft=n_fft, hop_length=hop_length, n_mfcc=n_mfcc,
                           chroma_tuning=chroma_tuning, frames=frames)
        return matrix_image(minmax(m), time_weights, size, pixel_mapping, style.colormaps[representation])
    if representation == "waveplot":
        return _paint(size, style, _waveform_layer(y, size))
    curve = feature_curve(y, sr, representation, n_fft=n_fft, hop_length=hop_length, frames=frames)
    values = curve_to_columns(minmax(curve), time_weights)
    return _paint(size, style, _waveform_layer(y, size),
                  _curve_layer(np.clip(values, 0.0, 1.0), size, style.line_width))


# ------------------------------------------------------------------------------- recipe "pymaivar"

RECIPES = ("corrected", "pymaivar")

# What PyMAiVAR's code/core.py fixed: librosa's defaults (n_fft 2048, hop 512, 20 MFCCs), the curves' frame
# times from librosa.frames_to_time's default rate, roll-off on x + 0.01, matplotlib's colours (C0 waveform,
# alpha 0.4 under the red curve), coolwarm for the chromagram (the MFCCs' colormap is chosen per clip).
PYMAIVAR_N_FFT = 2048
PYMAIVAR_HOP_LENGTH = 512
PYMAIVAR_N_MFCC = 20
PYMAIVAR_CURVE_TIME_RATE = 22050  # librosa.frames_to_time(frames) without sr: the curve's time axis
PYMAIVAR_ROLLOFF_OFFSET = 0.01  # spectral_rolloff(x + 0.01)
PYMAIVAR_MARGIN = 0.05  # matplotlib's axes.ymargin: the autoscaled y-limits of the waveform's axis
# matplotlib's line widths in points: Line2D (the curve) 1.5, the waveform polygon's outline (patch) 1.0
PYMAIVAR_CURVE_POINTS, PYMAIVAR_OUTLINE_POINTS = 1.5, 1.0
PYMAIVAR_STYLE = Style(colormaps={"chromagram": "coolwarm"}, waveform="#1f77b4", curve="#ff0000",
                       background="#ffffff", faded_alpha=0.4, line_width=2)


def check_recipe(recipe) -> str:
    """``recipe`` if it is one of :data:`RECIPES`, else a one-line ValueError listing them."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")
    return recipe


def specshow_cmap(data: np.ndarray, atol: float = 0.0) -> str:
    """The colormap ``librosa.display.specshow`` picks for ``data`` when given none (``librosa.display.cmap``):
    ``coolwarm`` when the 2nd and 98th percentiles of the finite values have opposite signs, else ``magma``.
    Values within ``atol`` of 0 count as 0."""
    data = np.asarray(data)
    lo, hi = np.percentile(data[np.isfinite(data)], [2, 98])
    return "magma" if lo >= -atol or hi <= atol else "coolwarm"


def matplotlib_levels(values01: np.ndarray) -> np.ndarray:
    """``values01`` snapped to the colormap entry matplotlib picks (``floor(v * 256)``, 1 -> 255), as ``k / 255``:
    :func:`apply_colormap` then looks up exactly that entry."""
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
    with row r's centre at r). Column ``c`` (centre ``c + 1/2``) shows every part of the line within
    ``half_width`` of its centre horizontally, widened by ``half_width`` vertically: the rows whose centres lie in
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
    with no point takes the value interpolated at its centre."""
    cols = np.clip(np.floor(x).astype(np.int64), 0, size - 1)
    order = np.lexsort((values, cols))
    counts = np.bincount(cols, minlength=size)
    starts = np.cumsum(counts) - counts
    medians = np.interp(np.arange(size) + 0.5, x, values)
    has = counts > 0
    medians[has] = values[order][starts[has] + (counts[has] - 1) // 2]
    return medians


def _pymaivar_waveform(env: np.ndarray, top: float, bottom: float, size: int, outline_half: float):
    """The waveform polygon (``+-env`` over the width) as matplotlib fills and outlines it: ``(fill, outline)``,
    (size, size) bool each. A pixel is filled when the polygon covers most of it (its row within the median
    envelope of its column); the outline is the polygon's edge stroked ``2 * outline_half`` pixels wide, the
    top and bottom edges and the vertical ends."""
    scale = size / (top - bottom)  # rows per amplitude unit; amplitude a sits at row (top - a) * scale - 1/2
    x = np.arange(len(env)) * (size / max(len(env) - 1, 1))
    fill = _envelope_layer(_column_medians(x, env, size).astype(np.float32), top, bottom, size)
    zero = top * scale - 0.5
    # each edge as a polyline from the centre line out to its first point, along the envelope, back to the centre
    xs = np.concatenate([[x[0]], x, [x[-1]]])
    outline = np.zeros((size, size), dtype=bool)
    for sign in (1.0, -1.0):
        rows = np.concatenate([[zero], zero - sign * env * scale, [zero]])
        first, last = polyline_columns(xs, rows, size, outline_half)
        outline |= _span_layer(first, last, size)
    return fill, outline


def render_pymaivar(y: np.ndarray, sr: int, representation: str, *, size: int, pixel_mapping: str,
                    line_width: int) -> np.ndarray:
    """One clip's image as PyMAiVAR drew it (the plot area, full-bleed): ``(size, size, 3)`` uint8.

    ``y`` at its native rate ``sr`` (``librosa.load(sr=None)``). See the module docstring, "Recipes".
    ``line_width`` (pixels) is the curve's 1.5 points; the waveform's outline is 1 point.
    """
    check_representation(representation)
    y, _ = clean_audio(y, PYMAIVAR_N_FFT)
    style = PYMAIVAR_STYLE
    if representation in MATRIX_REPRESENTATIONS:
        # specshow: every frame computed (Normalize, the scaling and the tuning see them all), frame f the f-th
        # of equal cells over the width
        m = feature_matrix(y, sr, representation, n_fft=PYMAIVAR_N_FFT, hop_length=PYMAIVAR_HOP_LENGTH,
                           n_mfcc=PYMAIVAR_N_MFCC, chroma_tuning=None)
        # (librosa's DCT gives a constant frame, e.g. silence, exact zeros above coefficient 0; our float32 product
        # leaves ~1e-8 of coefficient 0, which must not count as a sign)
        cmap = style.colormaps.get(representation) or specshow_cmap(m, atol=1e-6 * float(np.abs(m).max()))
        return matrix_image(matplotlib_levels(minmax(m)), uniform_map(m.shape[1], size, pixel_mapping), size,
                            pixel_mapping, cmap)

    env, env_hop = waveplot_envelope(y, sr)  # its points span the width: waveplot set the x-limits to them
    peak = float(env.max())
    outline_half = line_width * PYMAIVAR_OUTLINE_POINTS / PYMAIVAR_CURVE_POINTS / 2
    background, wave = hex_rgb(style.background), hex_rgb(style.waveform)
    if representation == "waveplot":
        bottom, top = autoscaled_limits(-peak, peak)
        fill, outline = _pymaivar_waveform(env, top, bottom, size, outline_half)
        return _composite(size, background, [(fill | outline, wave, 1.0)], agg=True)
    source = y + np.float32(PYMAIVAR_ROLLOFF_OFFSET) if representation == "spectral_rolloff" else y
    curve = minmax(feature_curve(source, sr, representation, n_fft=PYMAIVAR_N_FFT, hop_length=PYMAIVAR_HOP_LENGTH))
    # the 0..1 curve on the waveform's own axis: the limits cover both
    bottom, top = autoscaled_limits(min(-peak, float(curve.min())), max(peak, float(curve.max())))
    fill, outline = _pymaivar_waveform(env, top, bottom, size, outline_half)
    # frame f at f * hop / 22050 s on an axis spanning the waveform's duration at sr (past it: clipped away)
    duration = (len(env) - 1) * env_hop / sr
    x = np.arange(len(curve)) * (PYMAIVAR_HOP_LENGTH / PYMAIVAR_CURVE_TIME_RATE) * (size / duration)
    rows = (top - curve.astype(np.float64)) * (size / (top - bottom)) - 0.5
    first, last = polyline_columns(x, rows, size, line_width / 2)
    alpha = style.faded_alpha
    return _composite(size, background, [(fill, wave, alpha), (outline, wave, alpha),
                                         (_span_layer(first, last, size), hex_rgb(style.curve), 1.0)], agg=True)


def style_from_params(render_params: dict) -> Style:
    """The :class:`Style` that params.yaml's ``render`` section describes (validated)."""
    colours = render_params["colors"]
    style = Style(
        colormaps=dict(render_params["colormaps"]),
        waveform=str(colours["waveform"]),
        curve=str(colours["curve"]),
        background=str(colours["background"]),
        faded_alpha=float(render_params["faded_alpha"]),
        line_width=int(render_params["line_width"]),
    )
    for colour in (style.waveform, style.curve, style.background):
        hex_rgb(colour)
    for rep in MATRIX_REPRESENTATIONS:
        colormap_lut(style.colormaps[rep])
    return style


__all__ = [
    "REPRESENTATIONS", "PIXEL_MAPPINGS", "check_representation", "Style", "load_audio", "clean_audio", "axis_weights",
    "check_pixel_mapping",
    "overlap_weights", "nearest_weights", "column_edges", "frame_edges", "time_map", "bin_map",
    "matrix_to_pixels", "matrix_image", "curve_to_columns", "envelope_columns", "minmax", "colormap_lut",
    "frame_spectra", "squared_spectra", "magnitude_spectrogram", "power_spectrogram", "Filterbank",
    "feature_matrix", "feature_curve", "power_to_db", "render", "style_from_params",
    "RECIPES", "MATRIX_REPRESENTATIONS", "check_recipe", "read_audio", "uniform_map", "polyline_columns",
    "specshow_cmap", "matplotlib_levels", "autoscaled_limits", "waveplot_envelope", "render_pymaivar",
]
