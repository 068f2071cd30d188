"""Rasterizing the audio images without a figure: the pixel mapping, colormaps and colors, boolean layers and
their compositing into a ``size x size x 3`` uint8 array.

The pixel mapping (one rule, :func:`axis_weights`, used by every representation)
---------------------------------------------------------------------------------
Every axis is an interval cut into cells: the source cells (samples, STFT frames, feature bins) and the
destination cells (pixel columns or rows). ``render.pixel_mapping`` picks how a pixel gets its value:

- ``nearest`` (default): the cell under the pixel's center, as matplotlib rasterizes ``specshow`` in the
  authors' route (each quad filled, no antialiasing). Only the STFT frames some column shows are computed:
  at most ``size`` of them, whatever the clip's length (a 7 s clip at 44.1 kHz has 603 frames).
- ``area``: the average of the cells weighted by how much of the pixel each one covers (box resampling;
  every frame is computed and contributes).

Either way a source cell wider than a pixel is repeated.

- **Time -> columns.** The whole clip (``N`` samples, after padding to at least one FFT frame) spans the
  full width: column ``c`` of ``W`` covers samples ``[c N / W, (c + 1) N / W)``, the start of the clip at
  the left edge, its end at the right edge; one image per clip whatever its length, as in the paper.
  STFT frame ``f`` is centered on sample ``f * hop_length`` (librosa's ``center=True``) and covers samples
  ``[(f - 1/2) hop, (f + 1/2) hop)`` clipped to the clip, so that frame-based features (the matrices, the
  centroid and roll-off curves) land on the columns of the samples they describe, computed from the actual
  sample rate and hop length (not the authors' mismatched default-rate frame times).
  :func:`time_map` gives the frames to compute and their weights.
- **Feature bins -> rows.** Bin ``k`` of ``K`` covers rows ``[(K - k - 1) H / K, (K - k) H / K)`` from
  the top: bin 0 (the lowest coefficient, pitch class C or mel band) at the bottom (:func:`bin_map`).
- **Values -> colors.** Matrices are min-max normalized over the frames computed (matplotlib's default
  ``Normalize`` in ``specshow``; with ``nearest``, over the frames shown) and looked up in a 256-entry
  colormap table taken once from matplotlib's registry (:func:`colormap_lut`). Curves are min-max normalized
  (the authors' ``minmax_scale``) and drawn over the full height: 0 at the bottom row, 1 at the top row. The
  waveform is scaled so the clip's peak reaches the top and bottom edges.

A constant (e.g. silent) matrix or curve normalizes to 0 (:func:`minmax`) and a silent waveform draws as the
center line: no output pixel is ever NaN, images are uint8.
"""

from __future__ import annotations

import functools

import numpy as np

# matplotlib is imported inside colormap_lut, so that importing this module is cheap.

PIXEL_MAPPINGS = ("nearest", "area")


# ------------------------------------------------------------------------------------ pixel mapping


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
        centers = (src[:-1] + src[1:]) / 2
        for p in np.flatnonzero(empty):
            w[p, np.argmin(np.abs(centers - (dst[p] + dst[p + 1]) / 2))] = 1.0
        total = w.sum(axis=1, keepdims=True)
    return w / total


def nearest_weights(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """``nearest`` mapping: ``W[p, s]`` = 1 for the cell ``s`` under pixel ``p``'s center, else 0.

    A center on a boundary belongs to the later cell; a center outside every cell takes the first or last.
    This is how matplotlib rasterizes ``specshow``'s quads (no antialiasing): each pixel shows one cell.
    """
    src = np.asarray(src_edges, dtype=np.float64)
    dst = np.asarray(dst_edges, dtype=np.float64)
    centers = (dst[:-1] + dst[1:]) / 2
    cell = np.clip(np.searchsorted(src, centers, side="right") - 1, 0, len(src) - 2)
    w = np.zeros((len(centers), len(src) - 1))
    w[np.arange(len(centers)), cell] = 1.0
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
    """Frame ``f`` (centered on sample ``f * hop``) covers ``[(f - 1/2) hop, (f + 1/2) hop)`` within the clip."""
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

    With ``nearest`` every pixel shows one matrix entry: the entries each column shows are colored first
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


def envelope_columns_streamed(blocks, n: int, width: int) -> np.ndarray:
    """:func:`envelope_columns` of a clip of ``n >= 2 * width`` samples given as consecutive ``(offset, samples)``
    blocks (:meth:`maivar.audio.wav.WavClip.blocks`): the same maxima, taken block by block, so that only one
    block is in memory."""
    edges = column_edges(n, width)
    start = np.floor(edges[:-1]).astype(np.int64)
    last = np.minimum(np.maximum(np.ceil(edges[1:]).astype(np.int64), start + 1) - 1, n - 1)  # each column's last
    env = np.zeros(width, dtype=np.float32)  # |y| >= 0: 0 is neutral
    for offset, block in blocks:
        a = np.abs(block)
        end = offset + len(a)
        # the columns whose floor partition [start_c, start_c+1) meets the block, their parts of it
        c0 = int(np.searchsorted(start, offset, side="right")) - 1
        c1 = int(np.searchsorted(start, end, side="left"))
        local = np.maximum(start[c0:c1], offset) - offset
        env[c0:c1] = np.maximum(env[c0:c1], np.maximum.reduceat(a, local))
        inside = (last >= offset) & (last < end)
        env[inside] = np.maximum(env[inside], a[last[inside] - offset])
    return env


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the whole array; a constant array becomes 0 (never NaN)."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


# ------------------------------------------------------------------------------------------- colors


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


def hex_rgb(color: str) -> np.ndarray:
    """``#rrggbb`` -> float32 (3,) in 0..255; a one-line ValueError for anything else."""
    c = color.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"color {color!r} is not #rrggbb")
    return np.array([int(c[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)


def apply_colormap(values01: np.ndarray, name: str) -> np.ndarray:
    """Values in [0, 1] -> their colormap entries (rounded to the nearest of 256), uint8 (..., 3)."""
    idx = np.clip(np.rint(values01 * 255.0), 0, 255).astype(np.uint8)
    return np.take(colormap_lut(name), idx, axis=0)


# ----------------------------------------------------------------------------------------- layers


def envelope_layer(env: np.ndarray, top: float, bottom: float, size: int) -> np.ndarray:
    """(size, len(env)) bool: the pixels whose center lies between ``-env`` and ``+env`` of their column, on an axis
    from ``top`` (row 0's top edge) down to ``bottom`` (the last row's bottom edge): the filled waveform."""
    amp = top - (np.arange(size, dtype=np.float32) + 0.5) * ((top - bottom) / size)  # each row center's amplitude
    return np.abs(amp)[:, None] <= env[None, :]


def waveform_layer(y, size: int) -> np.ndarray:
    """(size, size) bool: the symmetric amplitude envelope, peak-normalized; the center line always. ``y``: the
    samples, or a :class:`~maivar.audio.wav.WavClip` (its envelope streamed)."""
    env = envelope_columns(y, size) if isinstance(y, np.ndarray) else y.envelope(size)
    peak = float(env.max())
    env = env / peak if peak > 0 else np.zeros_like(env)
    # the axis spans -1..+1 (peak to the edges); half a row (1 / size) at least: the center line
    return envelope_layer(np.maximum(env, 1.0 / size), 1.0, -1.0, size)


def span_layer(lo: np.ndarray, hi: np.ndarray, size: int) -> np.ndarray:
    """(size, len(lo)) bool: in each column, the rows from ``floor(lo)`` to ``ceil(hi)`` (row coordinates, row r's
    center at r); a column with ``lo = inf`` stays empty."""
    r = np.arange(size, dtype=np.float32)[:, None]
    return (r >= np.floor(lo)[None, :]) & (r <= np.ceil(hi)[None, :])


def curve_layer(values01: np.ndarray, size: int, line_width: int) -> np.ndarray:
    """(size, size) bool: a polyline through one value per column, 0 = bottom row, 1 = top row."""
    rows = (1.0 - values01) * (size - 1)
    nxt = np.append(rows[1:], rows[-1])
    # a column spans from its own point to the next one's, so the line stays connected when it jumps.
    return span_layer(np.minimum(rows, nxt) - (line_width - 1) / 2.0, np.maximum(rows, nxt) + (line_width - 1) / 2.0,
                      size)


def composite(size: int | tuple[int, int], background: np.ndarray, layers, agg: bool = False) -> np.ndarray:
    """Layers ``(mask, color, alpha)`` painted in order over the background: (size, size, 3) uint8, or
    (height, width, 3) for ``size = (height, width)``.

    ``agg``: blend as matplotlib's Agg renderer does (8-bit alpha, integer arithmetic that truncates; an opaque
    layer is copied) instead of rounding the float blend at the end.
    """
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if agg:
        image = np.empty((*shape, 3), dtype=np.int64)
        image[:] = background.astype(np.int64)
        for mask, color, alpha in layers:
            a8 = int(round(alpha * 255))
            src = color.astype(np.int64)
            image[mask] = src if a8 == 255 else (src * 256 * a8 + image[mask] * 255 * (256 - a8)) // (255 * 256 + a8)
        return image.astype(np.uint8)
    image = np.empty((*shape, 3), dtype=np.float32)
    image[:] = background
    for mask, color, alpha in layers:
        image[mask] = alpha * color + (1.0 - alpha) * image[mask]
    return np.rint(image).astype(np.uint8)


__all__ = [
    "PIXEL_MAPPINGS", "overlap_weights", "nearest_weights", "axis_weights", "check_pixel_mapping", "column_edges",
    "frame_edges", "time_map", "uniform_map", "bin_map", "matrix_to_pixels", "matrix_image", "curve_to_columns",
    "envelope_columns", "envelope_columns_streamed", "minmax", "colormap_lut", "hex_rgb", "apply_colormap",
    "envelope_layer", "waveform_layer",
    "span_layer", "curve_layer", "composite",
]
