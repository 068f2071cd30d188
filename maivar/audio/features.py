"""Audio images -> pooled backbone features (paper Sec. III-A.2: IRv2's 1536-d AvgPool features).

The images (N x S x S x 3 uint8, from ``images.h5``) are read in DataLoader workers, moved to the device
as uint8, resized there to ``input_size`` (bilinear), scaled to [0, 1] and normalized with ``mean`` /
``std`` (ImageNet's, as the authors did, or the model's own), and run through the frozen backbone
(:func:`maivar.audio.backbone.build_audio_backbone`) in batches (:func:`maivar.extraction.job.journaled_batches`).
Output rows are in input order.

``extract_audio.flips``: ``false``, N x D features of the images as drawn; ``true``, N x 4 x D, the features of
the four flip variants (:data:`FLIPS`; the heads draw one per clip per epoch); ``authors``, N x D features of
each image flipped once as the authors' extraction transform did (a random horizontal and a random vertical
flip, p = 0.5 each, for train and test images alike), the draw seeded per clip (:func:`authors_flips`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from maivar.core.feature_store import LazyRows, Store, open_store
from maivar.core.parallel import default_start_method
from maivar.core.rejections import Rejection
from maivar.extraction.data_parallel import JobSpec, World, rank_device, rank_workers, run_extraction
from maivar.extraction.inference import autocast, compute_dtype, select_device
from maivar.extraction.job import Batch, Job, journaled_batches, journaled_prefix
from maivar.extraction.resume import Journal, Resumed, blocks, file_identity
from maivar.settings.extract import ExtractAudioSettings
from maivar.settings.runtime import RuntimeSettings

from .backbone import AudioBackbone, build_audio_backbone

log = logging.getLogger(__name__)

# The four flip variants of an audio image (paper Sec. IV-B: random horizontal and vertical flips in training),
# in the order of the store's second axis when extract_audio.flips is on; variant 0 is the image as drawn.
FLIPS = ("none", "horizontal", "vertical", "both")


class _Rows(Dataset):
    """The images, each flipped as ``codes[i]`` says (an index into :data:`FLIPS`) when ``codes`` is given."""

    def __init__(self, rows: Sequence[np.ndarray], codes: np.ndarray | None = None):
        self.rows, self.codes = rows, codes

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        row = self.rows[i]
        if self.codes is not None:
            row = flipped(row, int(self.codes[i]))
        return torch.from_numpy(np.ascontiguousarray(row))


def flipped(image: np.ndarray, code: int) -> np.ndarray:
    """An H x W x C image flipped as ``FLIPS[code]`` names: horizontal mirrors it left-right, vertical upside
    down (a view)."""
    if FLIPS[code] in ("horizontal", "both"):
        image = image[:, ::-1]
    if FLIPS[code] in ("vertical", "both"):
        image = image[::-1]
    return image


def authors_flips(ids: Sequence[str], seed: int) -> np.ndarray:
    """``extract_audio.flips: authors``: each clip's one draw of the authors' ``RandomHorizontalFlip()`` and
    ``RandomVerticalFlip()`` (p = 0.5 each), as an index into :data:`FLIPS`, int8 (N,). The draw depends only on
    the seed and the clip's id (never on the batch, the process or the other clips)."""
    codes = np.empty(len(ids), dtype=np.int8)
    for i, clip_id in enumerate(ids):
        horizontal, vertical = np.random.default_rng([seed, zlib.crc32(clip_id.encode())]).random(2) < 0.5
        codes[i] = FLIPS.index({(False, False): "none", (True, False): "horizontal", (False, True): "vertical",
                                (True, True): "both"}[(bool(horizontal), bool(vertical))])
    return codes


def flip_variants(images: torch.Tensor) -> torch.Tensor:
    """B x H x W x C images -> 4B: the batch as drawn, mirrored left-right (time reversed), upside down (bins
    reversed), and both; in the order of :data:`FLIPS`, variant-major."""
    return torch.cat([images, images.flip(2), images.flip(1), images.flip(1, 2)])


def preprocess(images: torch.Tensor, *, input_size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """B x S x S x 3 uint8 -> B x 3 x input_size x input_size float, normalized (channels_last layout)."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


@torch.inference_mode()
def extract_audio_features(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers: int,
    device: torch.device,
    progress: bool = True,
    journal: Journal | None = None,
    flips: bool = False,
    flip_codes: np.ndarray | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """N x D float32 pooled features of ``images`` (any row-indexable N x S x S x 3 uint8 source); with
    ``flips``, N x 4 x D: the features of each image's four flip variants (:data:`FLIPS`, variant 0 unflipped).

    With a frozen backbone, storing the four variants once is exactly the paper's random flips: the heads draw
    one variant per clip per epoch (:mod:`maivar.heads.training`) instead of the backbone seeing a new flip.
    ``flip_codes`` (N,): each image flipped once as its code says (:func:`authors_flips`), N x D.

    With a ``journal`` (:mod:`maivar.extraction.resume`), finished batches are journaled, and the images an
    interrupted run already finished are taken from it.
    """
    n = len(images)
    out = np.empty((n, len(FLIPS), int(model.num_features)) if flips else (n, int(model.num_features)),
                   dtype=np.float32)
    if n == 0:
        return out
    done = journaled_prefix(journal, n, "images")
    if done.stop:
        out[: done.stop] = np.concatenate(done.features)
    for batch, feats in _feature_batches(
        model, images, [range(done.stop, n)], input_size=input_size, mean=mean, std=std, batch_size=batch_size,
        workers=workers, device=device, journal=journal, flips=flips, flip_codes=flip_codes, precision=precision,
        progress=progress, total=n, initial=done.stop,
    ):
        out[batch.start : batch.stop] = feats
    return out


def _image_batches(images: Sequence[np.ndarray], spans: Sequence[range], *, batch_size: int, workers: int,
                   pin_memory: bool, flip_codes: np.ndarray | None = None) -> Iterator[Batch]:
    """The images of ``spans``, ``batch_size`` at a time (a batch never spans two spans), read in ``workers``
    DataLoader processes (each flipped as ``flip_codes`` says, when given)."""
    batches = [list(range(b, min(b + batch_size, span.stop))) for span in spans
               for b in range(span.start, span.stop, batch_size)]
    if not batches:
        return
    loader = DataLoader(
        _Rows(images, flip_codes), batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=False, multiprocessing_context=default_start_method() if workers else None,
    )
    for indices, batch in zip(batches, loader, strict=True):
        yield Batch(indices[0], indices[-1] + 1, indices, batch, [])


def _feature_batches(
    model: nn.Module,
    images: Sequence[np.ndarray],
    spans: Sequence[range],
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers: int,
    device: torch.device,
    journal: Journal | None,
    flips: bool,
    precision: str,
    progress: bool,
    flip_codes: np.ndarray | None = None,
    total: int,
    initial: int,
) -> Iterator[tuple[Batch, np.ndarray]]:
    """The features of the images of ``spans`` (ascending, disjoint ranges: the whole input, or a rank's
    unfinished blocks), a batch at a time (:func:`~maivar.extraction.job.journaled_batches`)."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)

    def forward(chunk: torch.Tensor) -> torch.Tensor:
        b = len(chunk)
        x = preprocess(flip_variants(chunk) if flips else chunk, input_size=input_size, mean=mean_t, std=std_t)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            feats = model(x).float()
        return feats.reshape(len(FLIPS), b, -1).transpose(0, 1) if flips else feats

    batches = _image_batches(images, spans, batch_size=batch_size, workers=workers, pin_memory=device.type == "cuda",
                             flip_codes=flip_codes)
    return journaled_batches(batches, forward, spans=spans, chunk=batch_size, device=device, journal=journal,
                             progress=progress, total=total, initial=initial, desc="audio features", unit="img")


@dataclass
class AudioJob(Job):
    """What extract_audio computes with, set up once per process (:func:`audio_job`)."""

    images_path: str
    source: Store  # the image store's ids, labels, rejections and attributes (open_store, no data)
    backbone: AudioBackbone
    settings: ExtractAudioSettings
    runtime: RuntimeSettings

    def batches(self, todo: list[range], world: World) -> Iterator[tuple[Batch, np.ndarray]]:
        s, b = self.settings, self.backbone
        images = LazyRows(self.images_path, "images")
        try:
            yield from _feature_batches(
                b.model, images, todo, input_size=s.input_size, mean=b.mean, std=b.std,
                batch_size=self.runtime.extract_audio.batch_size,
                workers=rank_workers(self.runtime.worker_count, world), device=self.device, journal=self.journal,
                flips=s.flips is True, precision=s.precision, progress=world.rank == 0, total=sum(map(len, todo)),
                initial=0, flip_codes=authors_flips(self.source.ids, s.seed) if s.flips == "authors" else None,
            )
        finally:
            images.close()

    def describe(self) -> str:
        return (f"{len(self.source.ids)} audio images -> {self.settings.backbone} at {self.settings.input_size} px "
                f"on {self.device}")

    def store_rows(self, done: Resumed) -> tuple[list[str], list[int], list[Rejection]]:
        return self.source.ids, self.source.labels, self.source.rejected  # the rejections upstream, carried over

    def item_shape(self) -> tuple[int, ...]:
        dim = self.backbone.num_features
        return (len(FLIPS), dim) if self.settings.flips is True else (dim,)


def audio_job(spec: JobSpec, world: World) -> AudioJob:
    """extract_audio's :class:`AudioJob` in this process (``make_job`` of :mod:`maivar.extraction.data_parallel`)."""
    settings, runtime = spec.settings, spec.runtime
    source = open_store(spec.source, "images", load_data=False)
    device = rank_device(select_device(runtime.device), world)
    backbone = build_audio_backbone(settings, device, weights_file=spec.weights,
                                    compile_model=runtime.extract_audio.compile)
    attrs = {
        **settings.to_attrs(), **backbone.attrs(), "device": device.type, "dtype": compute_dtype(settings.precision),
        "representation": source.attrs.get("representation"),
        # only with the four variants (flips: true): a store without them is N x D, as it was before the option
        # existed (flips: authors is N x D too, and records extract_audio.flips: authors)
        **({"flips": list(FLIPS)} if settings.flips is True else {}),
    }
    batch_size = runtime.extract_audio.batch_size
    # finished batches of an interrupted run (or of other ranks, other machines) with the same images and
    # settings are reused (maivar.extraction.resume); the device is not part of what they depend on
    journal = Journal(spec.out_path, {"attrs": {k: v for k, v in attrs.items() if k != "device"},
                                      "batch_size": batch_size, "images": file_identity(spec.source),
                                      "ids": source.ids}, device=device.type)
    return AudioJob("images", device, backbone.weights, attrs, journal, blocks(len(source.ids), batch_size),
                    str(spec.source), source, backbone, settings, runtime)


def extract_audio_stage(images_path: str | Path, out_path: str | Path, weights_path: str | Path, *,
                        settings: ExtractAudioSettings, runtime: RuntimeSettings) -> None:
    """Stage extract_audio: the image store at ``images_path`` -> the feature store at ``out_path``.

    The output holds ``features`` N x D float32 (N x 4 x D with ``flips``), ids/labels aligned with the images,
    the input's rejections carried over, and attributes: every ``extract_audio.*`` setting, and what was resolved
    from them (the mean/std, the weights' source and sha256, the BatchNorm layers folded, the device, the compute
    dtype, the images' representation, the flips). With ``runtime.processes`` > 1, or under torchrun, data parallel
    (:mod:`maivar.extraction.data_parallel`).
    """
    n_images = len(open_store(images_path, "images", load_data=False).ids)
    run_extraction(audio_job, JobSpec(str(images_path), str(out_path), settings, runtime, str(weights_path)),
                   n_blocks=len(blocks(n_images, runtime.extract_audio.batch_size)),
                   device_type=select_device(runtime.device).type)
