"""The audio images' representations: one table, the only place that names them.

Six are the paper's (Fig. 5, Table II), in its order; ``melspectrogram`` is ours (the paper has no row for it).
Each :class:`Representation` says what is drawn (``kind``), from which feature (a function of
:mod:`maivar.audio.spectra`), with which default colormap, and under which title Table II prints it. Drawing
(:func:`maivar.audio.drawing.render`, :func:`maivar.audio.pymaivar.render_pymaivar`), the ``render.colormaps``
check, ``scripts/table2.py``, the benchmark and the tests all iterate this table: a representation added here
is drawn, checked, printed and tested everywhere.

=====================  ========  ==============================================================================
representation         kind      what the image shows
=====================  ========  ==============================================================================
``waveplot``           wave      the amplitude envelope, as ``librosa.display.waveshow`` draws a long clip: per
                                 column the peak ``|y|``, filled symmetrically about the center line
``spectral_centroid``  curve     the waveplot faded (``faded_alpha``) with the min-max normalized spectral
                                 centroid curve on top (``curve`` color), time-aligned with the waveform
``spectral_rolloff``   curve     the same with the spectral roll-off (85 %)
``mfcc``               matrix    ``librosa.feature.mfcc`` (``n_mfcc`` coefficients) through a colormap,
                                 coefficient 0 at the bottom
``mfcc_scaled``        matrix    the same after per-coefficient standardization (the paper's "MFCCs feature
                                 scaling", ``sklearn.preprocessing.scale(mfcc, axis=1)``)
``chromagram``         matrix    ``librosa.feature.chroma_stft`` (12 pitch classes, C at the bottom, B at the
                                 top) through ``coolwarm``, as the authors drew it
``melspectrogram``     matrix    ``librosa.feature.melspectrogram`` (128 mel bands, power) in dB relative to its
                                 maximum (``power_to_db(S, ref=np.max)``), the lowest band at the bottom, through
                                 ``magma`` (ours, not in the paper)
=====================  ========  ==============================================================================

Importing this module is cheap (numpy only): librosa, matplotlib and torch load when a feature is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from maivar.core.errors import PipelineError

from . import spectra

KINDS = ("wave", "curve", "matrix")


@dataclass(frozen=True)
class Representation:
    """One audio image: its params.yaml ``name``; its ``kind`` (``wave``: the waveform alone; ``curve``: a
    per-frame curve over the faded waveform; ``matrix``: a bins x frames matrix through a colormap); its
    ``feature`` (``feature(y, sr, analysis, frames=None)``, :mod:`maivar.audio.spectra`; None for the wave);
    its default matplotlib ``colormap`` (matrix kinds; None otherwise) and its Table II ``title``."""

    name: str
    kind: str
    feature: Callable | None
    colormap: str | None
    title: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"representation {self.name}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if (self.feature is None) != (self.kind == "wave") or (self.colormap is None) != (self.kind != "matrix"):
            raise ValueError(f"representation {self.name}: a wave has no feature, only a matrix has a colormap")


REPRESENTATIONS: dict[str, Representation] = {r.name: r for r in (
    Representation("waveplot", "wave", None, None, "Waveplot"),
    Representation("spectral_centroid", "curve", spectra.spectral_centroid, None, "Spectral Centroids"),
    Representation("spectral_rolloff", "curve", spectra.spectral_rolloff, None, "Spectral Rolloff"),
    Representation("mfcc", "matrix", spectra.mfcc, "coolwarm", "MFCCs"),
    Representation("mfcc_scaled", "matrix", spectra.mfcc_scaled, "coolwarm", "MFCCs Feature Scaling"),
    Representation("chromagram", "matrix", spectra.chromagram, "coolwarm", "Chromagram"),
    # ours: power_to_db(ref=np.max) is <= 0, and librosa.display.cmap picks magma for single-sign data
    Representation("melspectrogram", "matrix", spectra.melspectrogram, "magma", "Mel spectrogram"),
)}

NAMES = tuple(REPRESENTATIONS)


def get_representation(name: str) -> Representation:
    """The table's entry for ``name``; a one-line :class:`PipelineError` listing the valid names otherwise."""
    try:
        return REPRESENTATIONS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable value (a list from params.yaml)
        raise PipelineError(f"unknown representation {name!r}: choose one of {', '.join(NAMES)}") from None


def of_kind(kind: str) -> tuple[Representation, ...]:
    """The table's entries of one ``kind`` (``wave``, ``curve`` or ``matrix``), in table order."""
    return tuple(r for r in REPRESENTATIONS.values() if r.kind == kind)


__all__ = ["KINDS", "Representation", "REPRESENTATIONS", "NAMES", "get_representation", "of_kind"]
