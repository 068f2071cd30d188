"""A clip's audio as the audio images need it: a WAV read (and resampled) to mono float32, cleaned for the STFT.

Degenerate audio is well defined: non-finite samples (NaN/inf, possible in a float WAV) are replaced by 0 and
counted, and audio shorter than ``n_fft`` is zero-padded at the end to ``n_fft`` samples (:func:`clean_audio`).
A WAV that cannot be read at all raises :class:`~maivar.core.rejections.ClipFailure` with its reason.
"""

from __future__ import annotations

import numpy as np

from maivar.core import rejections
from maivar.core.rejections import ClipFailure

# librosa and soundfile are imported inside the functions, so that importing this module is cheap.


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


__all__ = ["load_audio", "read_audio", "clean_audio"]
