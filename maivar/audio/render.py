"""Stage ``render``: one audio image per manifest clip, over all cores, into ``images.h5`` + PNG previews.

Each worker loads one WAV (:func:`maivar.audio.wav.load_audio`) and renders it (:func:`maivar.audio.drawing.render`);
the parent writes the images in manifest order (sorted by id). A clip that cannot be rendered (missing, empty or
unreadable WAV, a worker that hangs or crashes) becomes a rejection with its reason, so ids stay aligned downstream.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maivar.core.atomic import atomic_path
from maivar.core.errors import PipelineError
from maivar.core.feature_store import create_store
from maivar.core.manifest import read_manifest
from maivar.core.parallel import guarded_imap
from maivar.core.rejections import ClipFailure, check_rejected_share

from .drawing import Style, check_recipe, render, style_from_params
from .raster import check_pixel_mapping
from .representations import get_representation
from .wav import load_audio, read_audio

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("id", "class_name", "label", "audio_path")


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray
    non_finite: int  # samples that were NaN/inf and were replaced by 0


# The render section's settings: any other key would be recorded in images.h5 but change nothing.
RENDER_KEYS = frozenset({"recipe", "image_size", "sample_rate", "n_fft", "hop_length", "n_mfcc", "pixel_mapping",
                         "chroma_tuning", "colormaps", "colors", "faded_alpha", "line_width", "previews_per_class",
                         "timeout_s", "max_rejected_share"})


def render_clip(audio_path: str, *, representation: str, sample_rate: int, size: int, n_fft: int,
                hop_length: int, n_mfcc: int, chroma_tuning, style: Style, pixel_mapping: str,
                recipe: str = "corrected") -> Rendered:
    """Worker: load one WAV and render it; raises :class:`ClipFailure` for a WAV that cannot be read.

    ``recipe="pymaivar"`` reads the WAV at its own rate, as the authors' ``librosa.load(sr=None)`` did
    (``sample_rate`` is then unused)."""
    _one_thread()
    if recipe == "pymaivar":
        y, sample_rate, non_finite = read_audio(audio_path)
    else:
        y, non_finite = load_audio(audio_path, sample_rate)
    image = render(y, sample_rate, representation, size=size, n_fft=n_fft, hop_length=hop_length, n_mfcc=n_mfcc,
                   chroma_tuning=chroma_tuning, style=style, pixel_mapping=pixel_mapping, recipe=recipe)
    return Rendered(image, non_finite)


def clip_keywords(representation: str, settings: dict, style: Style) -> dict:
    """:func:`render_clip`'s keywords (all but ``audio_path``) from render settings: params.yaml's ``render``
    section, or the ``render.*`` attributes a store records (``images.h5``), with ``style`` the :class:`Style` they
    describe (:func:`~maivar.audio.drawing.style_from_params`). A missing ``recipe`` is ``corrected``;
    ``chroma_tuning`` is required (None: estimated)."""
    s = settings
    return {
        "representation": representation, "sample_rate": int(s["sample_rate"]), "size": int(s["image_size"]),
        "n_fft": int(s["n_fft"]), "hop_length": int(s["hop_length"]), "n_mfcc": int(s["n_mfcc"]),
        "chroma_tuning": None if s["chroma_tuning"] is None else float(s["chroma_tuning"]), "style": style,
        "pixel_mapping": str(s["pixel_mapping"]), "recipe": str(s.get("recipe", "corrected")),
    }


def warm_up(kw: dict) -> None:
    """Render one silent clip in the parent: imports, numba compilation (librosa's first chroma/MFCC call
    takes seconds) and filterbanks are then inherited by the forked workers instead of paid by each."""
    import soxr  # noqa: F401 - librosa.resample's backend

    render(np.zeros(kw["n_fft"], np.float32), kw["sample_rate"], kw["representation"], size=kw["size"],
           n_fft=kw["n_fft"], hop_length=kw["hop_length"], n_mfcc=kw["n_mfcc"], chroma_tuning=kw["chroma_tuning"],
           style=kw["style"], pixel_mapping=kw["pixel_mapping"], recipe=kw["recipe"])


@functools.lru_cache(maxsize=1)
def _one_thread() -> None:
    """Each worker is one process on one core: keep torch's STFT and BLAS from spawning threads of their own
    (with all cores busy with workers, extra threads make the small matrix products 100x slower)."""
    import threadpoolctl
    import torch

    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(limits=1)


def render_stage(manifest_path: str | Path, *, out_path: str | Path, previews_dir: str | Path, representation,
                 render_params: dict, runtime: dict) -> dict:
    """Stage render: every clip of the manifest at ``manifest_path`` (see :func:`render_manifest`); ``runtime``
    holds the machine settings (``workers``)."""
    import librosa

    from maivar.core.params import resolve_workers

    return render_manifest(read_manifest(manifest_path, MANIFEST_COLUMNS), representation=representation,
                           render_params=render_params, workers=resolve_workers(runtime["workers"]),
                           out_path=out_path, previews_dir=previews_dir, librosa_version=librosa.__version__)


def render_manifest(manifest: pd.DataFrame, *, representation: str, render_params: dict, workers: int | None,
                    out_path: str | Path, previews_dir: str | Path, librosa_version: str) -> dict:
    """Render every clip of ``manifest`` into the store at ``out_path`` and previews into ``previews_dir``.

    Returns a summary ``{"rendered": n, "rejected": {reason: count}, "non_finite_clips": n}``.
    """
    get_representation(representation)
    p = render_params
    unknown = sorted(set(p) - RENDER_KEYS, key=lambda k: k != "size")
    if unknown:
        hint = " (renamed render.image_size: DVC's run-cache ignores parameters named size)" if "size" in p else ""
        raise PipelineError(f"params.yaml render.{unknown[0]} is not a render setting{hint}; the settings are "
                            f"{', '.join(sorted(RENDER_KEYS))}")
    try:
        style = style_from_params(p)
    except (KeyError, ValueError) as exc:
        raise PipelineError(f"params.yaml render section: {exc}: fix colormaps/colors/faded_alpha/line_width") from None
    try:
        check_pixel_mapping(p.get("pixel_mapping"))
        recipe = check_recipe(p.get("recipe", "corrected"))
    except ValueError as exc:
        raise PipelineError(f"params.yaml render.{exc}") from None
    worker = functools.partial(render_clip, **clip_keywords(representation, p, style))
    warm_up(worker.keywords)

    size = int(p["image_size"])
    attrs = {
        "representation": representation,
        **{f"render.{k}": v for k, v in sorted(p.items())
           if k not in ("previews_per_class", "max_rejected_share", "recipe")},
        "librosa_version": librosa_version,
        # This text is stored in images.h5 as it was first written, when this mapping's code lived in
        # maivar/audio_images.py (now maivar/audio/raster.py): kept byte for byte, so that moving the module did
        # not change the images' file.
        "pixel_mapping": "whole clip -> full width (column c covers samples [cN/W,(c+1)N/W)); bin 0 at the bottom; "
                         f"{p['pixel_mapping']} (see maivar/audio_images.py)",
    }
    if recipe != "corrected":
        # Recorded only when it is not the default: with recipe corrected (written out or not) images.h5 stays
        # byte for byte what it was before the parameter existed. The text names the module as it was written
        # (the drawing is now maivar/audio/pymaivar.py), kept byte for byte as above.
        attrs["render.recipe"] = recipe
        attrs["pixel_mapping"] = ("pymaivar: the authors' drawing (specshow's equal frame cells over the width; curves "
                                  "at frame times f*512/22050 s over the clip's duration, on the waveform's axis); "
                                  f"{p['pixel_mapping']} for the matrices (see maivar/audio/images.py)")
    per_class = int(p["previews_per_class"])
    kept, rejected, previews, non_finite = [], [], [], 0
    results = guarded_imap(worker, list(manifest["audio_path"]), workers=workers, timeout_s=float(p["timeout_s"]),
                           desc=f"render {representation}")
    # Images stream into the store as they arrive (in manifest order): memory stays bounded on UCF101.
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
        check_rejected_share(rejected, len(manifest), float(p["max_rejected_share"]),
                             what="clips could not be rendered", param="render.max_rejected_share")
        w.finish([r.id for r in kept], [int(r.label) for r in kept], rejected, attrs)

    write_previews(previews, previews_dir, per_class)
    reasons = Counter(r.reason for r in rejected)
    log.info("rendered %d clips (%s), rejected %d%s", len(kept), representation, len(rejected),
             f" ({dict(sorted(reasons.items()))})" if rejected else "")
    return {"rendered": len(kept), "rejected": dict(sorted(reasons.items())), "non_finite_clips": non_finite}


def write_previews(kept, previews_dir: str | Path, per_class: int) -> list[str]:
    """The first ``per_class`` rendered clips (by id) of each class as ``<class_name>__<id>.png``, atomically."""
    from PIL import Image

    taken: Counter = Counter()
    names = []
    with atomic_path(previews_dir, directory=True) as tmp:
        for row, image in kept:
            if taken[row.class_name] >= per_class:
                continue
            taken[row.class_name] += 1
            name = f"{row.class_name}__{row.id}.png"
            Image.fromarray(image, mode="RGB").save(tmp / name, format="PNG", optimize=False)
            names.append(name)
    return names
