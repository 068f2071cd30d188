"""A clip's audio as the audio images need it: a WAV read (and resampled) to mono float32, cleaned for the STFT.

Degenerate audio is well defined: non-finite samples (NaN/inf, possible in a float WAV) are replaced by 0 and
counted, and audio shorter than ``n_fft`` is zero-padded at the end to ``n_fft`` samples (:func:`clean_audio`).
A WAV that cannot be read at all raises :class:`~maivar.core.rejections.ClipFailure` with its reason.

:func:`load_audio` and :func:`read_audio` read the whole clip; :class:`WavClip` reads it piece by piece (the
samples some STFT frames need, or blocks in turn), so that memory does not grow with the clip's length: the
same mono samples, range by range.
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

    import soundfile as sf

    _check_file(path)
    try:
        data, native_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types for a damaged file
        raise _unreadable(path, exc) from None
    if data.shape[0] == 0:
        raise ClipFailure(rejections.EMPTY_FILE, f"{path} holds no samples")
    y, n_bad = _mix(data)
    return y, int(native_rate), n_bad


def _check_file(path) -> None:
    import os

    if not os.path.isfile(path):
        raise ClipFailure(rejections.MISSING_FILE, f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise ClipFailure(rejections.EMPTY_FILE, f"{path} is 0 bytes")


def _unreadable(path, exc: Exception) -> ClipFailure:
    return ClipFailure(rejections.UNREADABLE_AUDIO, f"{path}: {type(exc).__name__}: {exc}".splitlines()[0])


def _mix(data: np.ndarray) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 -> mono float32 (the channel mean, each sample on its own: any range of a clip
    mixes to the same samples as the whole clip), after replacing non-finite samples by 0; and their count."""
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
    return y, n_bad


class WavClip:
    """A WAV opened for bounded reads (a context manager): the mono samples :func:`read_audio` gives, range by
    range, never the whole clip at once.

    ``len(clip)`` is the clip's length after :func:`clean_audio`'s zero padding to ``min_length`` samples; samples
    past the file's end read as 0. :meth:`windows` gathers the STFT frames' windows
    (:func:`maivar.audio.spectra.frame_spectra` takes a clip for ``y``), :meth:`envelope` streams the
    waveform's envelope in blocks of :attr:`BLOCK` samples, :meth:`count_non_finite` streams the count of
    non-finite samples (0 without reading for integer PCM). Raises :class:`ClipFailure` as :func:`read_audio`.
    """

    BLOCK = 1 << 18  # samples a block (1 MiB of float32 per channel)

    def __init__(self, path, min_length: int = 0):
        import soundfile as sf

        _check_file(path)
        self.path = str(path)
        try:
            self._file = sf.SoundFile(self.path)
        except Exception as exc:  # noqa: BLE001 - libsndfile raises several types for a damaged file
            raise _unreadable(path, exc) from None
        self.frames, self.rate, self.channels = int(self._file.frames), int(self._file.samplerate), self._file.channels
        self.subtype = self._file.subtype
        if self.frames == 0:
            self.close()
            raise ClipFailure(rejections.EMPTY_FILE, f"{path} holds no samples")
        self.length = max(self.frames, int(min_length))

    def __len__(self) -> int:
        return self.length

    def __enter__(self) -> WavClip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Mono float32 samples ``[start, stop)`` of the padded clip (``0 <= start <= stop <= len(clip)``)."""
        out = np.zeros(stop - start, dtype=np.float32)
        lo, hi = start, min(stop, self.frames)
        if hi > lo:
            out[: hi - lo] = self._read_mixed(lo, hi)[0]
        return out

    def _read_mixed(self, lo: int, hi: int) -> tuple[np.ndarray, int]:
        try:
            self._file.seek(lo)
            data = self._file.read(hi - lo, dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001
            raise _unreadable(self.path, exc) from None
        if data.shape[0] != hi - lo:
            raise ClipFailure(rejections.UNREADABLE_AUDIO, f"{self.path}: read {data.shape[0]} of the {hi - lo} "
                              f"samples from {lo}")
        return _mix(data)

    def blocks(self, block: int | None = None):
        """``(offset, samples)`` over the whole padded clip, ``block`` samples at a time."""
        block = block or self.BLOCK
        for start in range(0, self.length, block):
            yield start, self.read(start, min(start + block, self.length))

    def count_non_finite(self) -> int:
        """The samples (of every channel) that are NaN or inf, replaced by 0: only a float WAV can hold one."""
        if self.subtype.startswith("PCM") or self.subtype in ("ULAW", "ALAW"):
            return 0
        return sum(self._read_mixed(lo, min(lo + self.BLOCK, self.frames))[1]
                   for lo in range(0, self.frames, self.BLOCK))

    def windows(self, starts: np.ndarray, n_fft: int) -> np.ndarray:
        """``(len(starts), n_fft)`` float32: row ``i`` holds samples ``[starts[i], starts[i] + n_fft)`` (0 outside
        the clip), the windows of :func:`~maivar.audio.spectra.frame_spectra`. ``starts`` sorted; overlapping
        windows are read in one run, so memory is at most ``len(starts) x n_fft`` samples twice."""
        out = np.zeros((len(starts), n_fft), dtype=np.float32)
        i = 0
        while i < len(starts):
            j = i + 1
            while j < len(starts) and starts[j] < starts[j - 1] + n_fft:
                j += 1
            lo, hi = max(int(starts[i]), 0), min(int(starts[j - 1]) + n_fft, self.length)
            run = self.read(lo, hi) if hi > lo else np.zeros(0, np.float32)
            for k in range(i, j):
                a, b = max(int(starts[k]), 0), min(int(starts[k]) + n_fft, self.length)
                if b > a:
                    out[k, a - int(starts[k]) : b - int(starts[k])] = run[a - lo : b - lo]
            i = j
        return out

    def envelope(self, width: int) -> np.ndarray:
        """:func:`~maivar.audio.raster.envelope_columns` of the padded clip, streamed block by block."""
        from .raster import envelope_columns, envelope_columns_streamed

        if self.length <= self.BLOCK:
            return envelope_columns(self.read(0, self.length), width)
        return envelope_columns_streamed(self.blocks(), self.length, width)


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


__all__ = ["load_audio", "read_audio", "clean_audio", "WavClip"]
