"""The audio images' features: the STFT frames, librosa's filterbanks, dB scale and DCT, and the feature
functions the representation table (:mod:`maivar.audio.representations`) points at.

Each feature equals librosa's own function (the tests check it): the STFT frames come from ``torch.fft.rfft``
(Hann window, centered frames, zero padding, as ``librosa.stft``), the mel and chroma filterbanks are
librosa's (built once per process), the dB scale and the DCT are librosa's formulas, and the spectral centroid
and roll-off are their definitions written out. Everything is computed frames-major.

A feature function is ``feature(y, sr, analysis, frames=None)``: ``y`` float32 mono audio (at least
``n_fft`` samples, :func:`maivar.audio.wav.clean_audio`), ``analysis`` the :class:`Analysis` settings, and
``frames`` the STFT frames to compute (``None``: all ``1 + len(y) // hop_length``). A matrix feature returns
``(bins, len(frames))`` float32, bin 0 the lowest coefficient, pitch class or band; a curve feature one value
per frame. Every matrix feature is per frame except where its statistics span the frames computed: then they
are taken over those frames (``mfcc_scaled``'s standardization, ``melspectrogram``'s 0 dB reference and
floor, every dB floor, the estimated chroma tuning).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# librosa, scipy and torch are imported inside the functions, so that importing this module is cheap.


@dataclass(frozen=True)
class Analysis:
    """The analysis settings of the features: ``n_fft`` and ``hop_length`` of the STFT, the MFCCs' ``n_mfcc``
    and the chromagram's ``chroma_tuning`` (fractions of a bin; ``None``: estimated per clip, librosa's
    default)."""

    n_fft: int
    hop_length: int
    n_mfcc: int
    chroma_tuning: float | None


# ------------------------------------------------------------------------------------------ STFT


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int):
    import torch

    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def frame_spectra(y: np.ndarray, n_fft: int, hop_length: int, frames: np.ndarray | None = None):
    """Rows of ``librosa.stft(y, n_fft, hop_length)`` (Hann window, centered frames, zero padding) as a
    frames-major complex64 torch tensor ``(len(frames), 1 + n_fft // 2)``; ``frames=None`` means all
    ``1 + len(y) // hop_length`` frames.

    Only the requested frames are gathered and transformed (``torch.fft.rfft`` on one batch: 2-3x faster
    than numpy's FFT on one core). Frames wholly inside the clip are read straight from ``y``; only those
    that reach past an end are zero-padded. The tests check the result equals librosa's STFT. ``y`` may be a
    :class:`~maivar.audio.wav.WavClip` (a WAV read window by window): the same windows, read from the file.
    """
    import torch

    n = len(y)
    n_frames = 1 + n // hop_length
    frames = np.arange(n_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    starts = frames * hop_length - n_fft // 2  # sorted: edge frames come first and last
    if not isinstance(y, np.ndarray):  # a WavClip: only these frames' samples are read
        return torch.fft.rfft(torch.from_numpy(y.windows(starts, n_fft)).mul_(_hann(n_fft)))
    signal = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
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


# ----------------------------------------------------------------------------------- filterbanks


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


@functools.lru_cache(maxsize=8)
def _dct_rows(n_mfcc: int, n_mels: int) -> np.ndarray:
    """The first ``n_mfcc`` rows of the orthonormal DCT-II matrix: ``M @ x == scipy.fft.dct(x, 2, norm='ortho')
    [:n_mfcc]``, what ``librosa.feature.mfcc`` applies to the dB mel spectrogram (no lifter)."""
    import scipy.fft

    d = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]
    return np.ascontiguousarray(d, dtype=np.float32)


def power_to_db(s: np.ndarray, ref=1.0, amin: float = 1e-10, top_db: float = 80.0) -> np.ndarray:
    """``librosa.power_to_db(s, ref=ref, amin=amin, top_db=top_db)`` in float32, without its checks: ``10 log10``
    of ``max(s, amin)`` relative to ``max(ref, amin)``, floored at ``top_db`` below the maximum. ``ref`` is a
    number or, as in librosa, a function of ``s`` (``np.max``: 0 dB at the largest entry, the rest below)."""
    log_spec = np.log10(np.maximum(s, np.float32(amin)))
    log_spec *= np.float32(10.0)
    ref_value = ref(s) if callable(ref) else np.abs(ref)  # librosa's arithmetic: float32 for np.max of float32 s
    log_spec -= 10.0 * np.log10(np.maximum(amin, ref_value))  # ref 1.0: 0, exactly
    return np.maximum(log_spec, log_spec.max() - np.float32(top_db))


def standardize_rows(m: np.ndarray) -> np.ndarray:
    """Per-coefficient zero mean, unit variance (``sklearn.preprocessing.scale(m, axis=1)``; std 0 -> 1)."""
    m = m.astype(np.float64)
    mean = m.mean(axis=1, keepdims=True)
    std = m.std(axis=1, keepdims=True)
    std[std < 10 * np.finfo(np.float64).eps] = 1.0
    return ((m - mean) / std).astype(np.float32)


# -------------------------------------------------------------------------------- matrix features


def mfcc(y: np.ndarray, sr: int, analysis: Analysis, frames: np.ndarray | None = None) -> np.ndarray:
    """``librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop_length)[:, frames]``:
    the DCT (:func:`_dct_rows`) of the dB (:func:`power_to_db`, ref 1.0) 128-band mel spectrogram."""
    squared = squared_spectra(y, analysis.n_fft, analysis.hop_length, frames)
    mel_db = power_to_db(_mel_bank(sr, analysis.n_fft).apply(squared))
    return (mel_db @ _dct_rows(analysis.n_mfcc, mel_db.shape[1]).T).T


def mfcc_scaled(y: np.ndarray, sr: int, analysis: Analysis, frames: np.ndarray | None = None) -> np.ndarray:
    """The paper's "MFCCs feature scaling": :func:`mfcc` standardized per coefficient over the frames
    (``sklearn.preprocessing.scale(mfcc, axis=1)``)."""
    return standardize_rows(mfcc(y, sr, analysis, frames))


def chromagram(y: np.ndarray, sr: int, analysis: Analysis, frames: np.ndarray | None = None) -> np.ndarray:
    """``librosa.feature.chroma_stft(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, tuning=chroma_tuning)``:
    12 pitch classes, C first; each frame's maximum 1. ``chroma_tuning`` None: estimated, as librosa does."""
    n_fft, hop_length = analysis.n_fft, analysis.hop_length
    if analysis.chroma_tuning is None:  # librosa's default: estimate the tuning
        import librosa

        power = power_spectrogram(y, n_fft, hop_length, frames)
        return librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft, hop_length=hop_length)
    chroma = _chroma_bank(sr, n_fft, float(analysis.chroma_tuning)).apply(squared_spectra(y, n_fft, hop_length, frames))
    peak = chroma.max(axis=1, keepdims=True)  # librosa.util.normalize(norm=inf): each frame's max to 1
    tiny = np.finfo(np.float32).tiny
    return (chroma / np.where(peak < tiny, np.float32(1), peak)).T


def melspectrogram(y: np.ndarray, sr: int, analysis: Analysis, frames: np.ndarray | None = None) -> np.ndarray:
    """``librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length),
    ref=np.max)``: the 128-band mel power spectrogram (Slaney mel filters, power 2) in dB relative to its
    largest entry (0 dB; the rest below, floored 80 dB under it), the lowest band first.

    The reference is ``np.max`` (librosa's own examples' choice) rather than 1.0: the image is min-max
    normalized, so the reference only shifts the values, but with ``np.max`` they never change sign, and the
    colormap librosa's ``specshow`` picks for them (``magma``, for single-sign data) is the same for every clip.
    """
    squared = squared_spectra(y, analysis.n_fft, analysis.hop_length, frames)
    return power_to_db(_mel_bank(sr, analysis.n_fft).apply(squared), ref=np.max).T


# --------------------------------------------------------------------------------- curve features


def _magnitudes(y: np.ndarray, analysis: Analysis, frames: np.ndarray | None) -> np.ndarray:
    squared = squared_spectra(y, analysis.n_fft, analysis.hop_length, frames)
    return np.sqrt(squared[:, 0::2] + squared[:, 1::2])  # (frames, bins) magnitudes


def spectral_centroid(y: np.ndarray, sr: int, analysis: Analysis, frames: np.ndarray | None = None) -> np.ndarray:
    """``librosa.feature.spectral_centroid(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length)[0]`` (Hz), its
    definition on the magnitude spectrogram written out (librosa normalizes the whole spectrogram first, 5x
    slower; the tests check equality). A silent frame's centroid is 0."""
    spectra = _magnitudes(y, analysis, frames)
    total = spectra.sum(axis=1)
    tiny = np.finfo(np.float32).tiny
    return np.where(total > tiny, (spectra @ _fft_frequencies(sr, analysis.n_fft)) / np.maximum(total, tiny),
                    np.float32(0))


def spectral_rolloff(y: np.ndarray, sr: int, analysis: Analysis, frames: np.ndarray | None = None,
                     roll_percent: float = 0.85) -> np.ndarray:
    """``librosa.feature.spectral_rolloff(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length)[0]`` (Hz): the
    frequency below which ``roll_percent`` of each frame's magnitude lies, written out. A silent frame's is 0."""
    spectra = _magnitudes(y, analysis, frames)
    cumulative = np.cumsum(spectra, axis=1)
    reached = cumulative >= roll_percent * cumulative[:, -1:]
    return _fft_frequencies(sr, analysis.n_fft)[np.argmax(reached, axis=1)]


__all__ = [
    "Analysis", "frame_spectra", "squared_spectra", "magnitude_spectrogram", "power_spectrogram", "Filterbank",
    "power_to_db", "standardize_rows", "mfcc", "mfcc_scaled", "chromagram", "melspectrogram", "spectral_centroid",
    "spectral_rolloff",
]
