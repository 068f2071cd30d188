"""Stage ``render``: one audio image per manifest clip, over all cores, into ``images.h5`` + PNG previews.

Each worker reads one WAV (only the samples it draws, where the drawing allows: :func:`render_clip`) and renders
it (:func:`maivar.audio.drawing.render`); the parent writes the images in manifest order (sorted by id). A clip that
cannot be rendered (missing, empty or unreadable WAV, too long to read whole, a worker that hangs or crashes) becomes
a rejection with its reason, so ids stay aligned downstream.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from maivar.core import rejections
from maivar.core.atomic import atomic_path
from maivar.core.errors import PipelineError
from maivar.core.feature_store import create_store
from maivar.core.manifest import read_manifest
from maivar.core.names import safe_name
from maivar.core.parallel import guarded_imap
from maivar.core.rejections import ClipFailure, check_rejected_share

from .drawing import Style, render, style_from_settings
from .representations import get_representation
from .wav import WavClip, load_audio, read_audio

if TYPE_CHECKING:
    from maivar.settings.render import RenderSettings
    from maivar.settings.runtime import RuntimeSettings

log = logging.getLogger(__name__)

RENDER_COLUMNS = ("id", "class_name", "label", "audio_path")  # the manifest's columns render reads


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray
    non_finite: int  # samples that were NaN/inf and were replaced by 0


def render_clip(audio_path: str, *, representation: str, sample_rate: int, size: int, n_fft: int,
                hop_length: int, n_mfcc: int, chroma_tuning, style: Style, pixel_mapping: str,
                recipe: str = "corrected", max_whole_clip_s: float | None = None) -> Rendered:
    """Worker: render one WAV; raises :class:`ClipFailure` for a WAV that cannot be read.

    Memory does not grow with the clip where the drawing allows it: recipe ``corrected`` with ``nearest`` on a
    WAV at ``sample_rate`` reads only the samples of the frames shown, and streams the waveform's envelope
    (:class:`~maivar.audio.wav.WavClip`). Anything else needs the whole clip in memory (``area``: every frame;
    a WAV at another rate: resampled whole; ``pymaivar``): a clip longer than ``max_whole_clip_s`` seconds is
    then ``too_long`` (None: no limit).

    ``recipe="pymaivar"`` reads the WAV at its own rate, as the authors' ``librosa.load(sr=None)`` did
    (``sample_rate`` is then unused)."""
    _one_thread()
    with WavClip(audio_path, min_length=n_fft) as clip:
        if recipe == "corrected" and pixel_mapping == "nearest" and clip.rate == sample_rate:
            image = render(clip, sample_rate, representation, size=size, n_fft=n_fft, hop_length=hop_length,
                           n_mfcc=n_mfcc, chroma_tuning=chroma_tuning, style=style, pixel_mapping=pixel_mapping,
                           recipe=recipe)
            return Rendered(image, clip.count_non_finite())
        seconds = clip.frames / clip.rate
    if max_whole_clip_s is not None and seconds > max_whole_clip_s:
        why = ("recipe pymaivar" if recipe == "pymaivar" else "pixel_mapping area" if pixel_mapping != "nearest"
               else f"a {clip.rate} Hz WAV resampled to {sample_rate} Hz")
        raise ClipFailure(rejections.TOO_LONG, f"{seconds:.1f} s, and {why} needs the whole clip in memory: more "
                          f"than render.max_whole_clip_s {max_whole_clip_s:g}")
    if recipe == "pymaivar":
        y, sample_rate, non_finite = read_audio(audio_path)
    else:
        y, non_finite = load_audio(audio_path, sample_rate)
    image = render(y, sample_rate, representation, size=size, n_fft=n_fft, hop_length=hop_length, n_mfcc=n_mfcc,
                   chroma_tuning=chroma_tuning, style=style, pixel_mapping=pixel_mapping, recipe=recipe)
    return Rendered(image, non_finite)


def clip_keywords(representation: str, settings: RenderSettings) -> dict:
    """:func:`render_clip`'s keywords (all but ``audio_path``) from the ``render`` settings (params.yaml's section, or
    what a store recorded: :meth:`RenderSettings.from_attrs`)."""
    return {
        "representation": get_representation(representation).name, "sample_rate": settings.sample_rate,
        "size": settings.image_size, "n_fft": settings.n_fft, "hop_length": settings.hop_length,
        "n_mfcc": settings.n_mfcc, "chroma_tuning": settings.chroma_tuning, "style": style_from_settings(settings),
        "pixel_mapping": settings.pixel_mapping, "recipe": settings.recipe,
        "max_whole_clip_s": settings.max_whole_clip_s,
    }


def warm_up(kw: dict) -> None:
    """Render one silent clip in the parent: imports, numba compilation (librosa's first chroma/MFCC call
    takes seconds) and filterbanks are then inherited by the forked workers instead of paid by each."""
    import soxr  # noqa: F401 - librosa.resample's backend

    render(np.zeros(kw["n_fft"], np.float32), kw["sample_rate"], kw["representation"], size=kw["size"],
           n_fft=kw["n_fft"], hop_length=kw["hop_length"], n_mfcc=kw["n_mfcc"], chroma_tuning=kw["chroma_tuning"],
           style=kw["style"], pixel_mapping=kw["pixel_mapping"], recipe=kw["recipe"])


_ONE_THREAD_PID: int | None = None


def _one_thread() -> None:
    """Each worker is one process on one core: keep torch's STFT and BLAS from spawning threads of their own
    (with all cores busy with workers, extra threads make the small matrix products 100x slower). Once per
    process, by its pid: a forked worker whose parent had done it (an in-process render) must do it again, as
    the parent may have raised torch's threads since (maivar.core.parallel's workers also start at one)."""
    global _ONE_THREAD_PID
    if _ONE_THREAD_PID == os.getpid():
        return
    import threadpoolctl
    import torch

    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(limits=1)
    _ONE_THREAD_PID = os.getpid()


def render_stage(manifest_path: str | Path, *, out_path: str | Path, previews_dir: str | Path, representation: str,
                 settings: RenderSettings, runtime: RuntimeSettings) -> dict:
    """Stage render: every clip of the manifest at ``manifest_path`` (see :func:`render_manifest`) with
    ``runtime.workers`` processes."""
    import librosa

    return render_manifest(read_manifest(manifest_path, RENDER_COLUMNS), representation=representation,
                           settings=settings, workers=runtime.worker_count, out_path=out_path,
                           previews_dir=previews_dir, librosa_version=librosa.__version__)


def render_manifest(manifest: pd.DataFrame, *, representation: str, settings: RenderSettings, workers: int | None,
                    out_path: str | Path, previews_dir: str | Path, librosa_version: str) -> dict:
    """Render every clip of ``manifest`` into the store at ``out_path`` and previews into ``previews_dir``.

    The store records the representation, every ``render`` setting (``render.*``: :meth:`RenderSettings.to_attrs`,
    read back by ``maivar predict``) and librosa's version. Returns a summary ``{"rendered": n, "rejected":
    {reason: count}, "non_finite_clips": n}``.
    """
    worker = functools.partial(render_clip, **clip_keywords(representation, settings))
    warm_up(worker.keywords)

    size = settings.image_size
    attrs = {"representation": representation, **settings.to_attrs(), "librosa_version": librosa_version}
    per_class = settings.previews_per_class
    kept, rejected, previews, non_finite = [], [], [], 0
    results = guarded_imap(worker, list(manifest["audio_path"]), workers=workers, timeout_s=settings.timeout_s,
                           desc=f"render {representation}")
    # Images stream into the store as they arrive (in manifest order): memory stays bounded on UCF101. Both outputs
    # are complete in their temporaries before either is renamed (the previews' rename comes last): a failure
    # anywhere, PNG encoding included, leaves the previous run's images.h5 and previews, never a mix of two runs.
    with atomic_path(previews_dir, directory=True) as previews_tmp:
        with create_store(out_path, data_name="images", n=len(manifest), item_shape=(size, size, 3),
                          dtype=np.uint8, compression="gzip", compression_opts=1) as w:
            for row, result in zip(manifest.itertuples(index=False), results, strict=True):
                if isinstance(result, ClipFailure):  # an unreadable WAV, a worker that hung or crashed
                    rejected.append(result.rejection(row.id))
                    log.warning("rejected %s: %s (%s)", row.id, result.reason, result.detail)
                    continue
                w.write(len(kept), result.image)
                kept.append(row)
                if sum(r.class_name == row.class_name for r, _ in previews) < per_class:
                    previews.append((row, result.image))
                if result.non_finite:
                    non_finite += 1
                    log.warning("%s: %d non-finite samples replaced by 0", row.id, result.non_finite)
            if not kept:
                first = rejected[0]
                raise PipelineError(f"no clip could be rendered (e.g. {first.id}: {first.reason}, {first.detail})")
            check_rejected_share(rejected, len(manifest), settings.max_rejected_share,
                                 what="clips could not be rendered", param="render.max_rejected_share")
            write_previews(previews, previews_tmp, per_class)
            w.finish([r.id for r in kept], [int(r.label) for r in kept], rejected, attrs)
    reasons = Counter(r.reason for r in rejected)
    log.info("rendered %d clips (%s), rejected %d%s", len(kept), representation, len(rejected),
             f" ({dict(sorted(reasons.items()))})" if rejected else "")
    return {"rendered": len(kept), "rejected": dict(sorted(reasons.items())), "non_finite_clips": non_finite}


def preview_name(class_name: str, clip_id: str) -> str:
    """A preview's file name, ``<class>__<id>.png``, each part its :func:`~maivar.core.names.safe_name` (a label
    is never a path or markup: ``dvc plots show`` writes these names into its page); UCF101's names stay as
    they are (``ApplyEyeMakeup__v_ApplyEyeMakeup_g08_c01.png``). The class part never holds ``__``, so the name
    splits back at the first ``__`` (:mod:`maivar.report` maps the class part back to its label)."""
    return f"{safe_name(class_name, forbid=('__',))}__{safe_name(clip_id)}.png"


def write_previews(kept, folder: str | Path, per_class: int) -> list[str]:
    """The first ``per_class`` rendered clips (by id) of each class as :func:`preview_name` PNGs in ``folder`` (a
    temporary folder: the caller renames it into place)."""
    from PIL import Image

    taken: Counter = Counter()
    names = []
    for row, image in kept:
        if taken[row.class_name] >= per_class:
            continue
        taken[row.class_name] += 1
        name = preview_name(row.class_name, row.id)
        Image.fromarray(image, mode="RGB").save(Path(folder) / name, format="PNG", optimize=False)
        names.append(name)
    return names
