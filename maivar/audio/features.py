"""Audio images -> pooled backbone features (paper Sec. III-A.2: IRv2's 1536-d AvgPool features).

The images (N x S x S x 3 uint8, from ``images.h5``) are read in DataLoader workers, moved to the device
as uint8, resized there to ``input_size`` (bilinear), scaled to [0, 1] and normalised with ``mean`` /
``std`` (ImageNet's, as the authors did, or the model's own), and run through the frozen backbone in
batches. Output rows are in input order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from maivar.core.errors import PipelineError
from maivar.core.feature_store import LazyRows, create_store, open_store
from maivar.core.parallel import default_start_method
from maivar.core.params import resolve_workers
from maivar.extraction.checkpoints import Weights, load_checkpoint_into, warn_random_weights, weights_sha256
from maivar.extraction.data_parallel import (
    Extraction,
    World,
    rank_device,
    rank_summary,
    rank_todo,
    rank_workers,
    run_stage,
)
from maivar.extraction.inference import (
    OomGuard,
    autocast,
    check_precision,
    compute_dtype,
    prepare_for_inference,
    select_device,
    warn_if_emulated,
)
from maivar.extraction.resume import Journal, Resumed, blocks, file_identity

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The four flip variants of an audio image (paper Sec. IV-B: random horizontal and vertical flips in training),
# in the order of the store's second axis when extract_audio.flips is on; variant 0 is the image as drawn.
FLIPS = ("none", "horizontal", "vertical", "both")


def create_audio_backbone(
    name: str, *, pretrained: bool, checkpoint: str | None, seed: int
) -> tuple[nn.Module, Weights]:
    """A timm model with pooled features (``num_classes=0``) and where its weights came from.

    ``checkpoint`` may be a ``.safetensors`` file (``safetensors.torch.save_file``, timm's ``save_for_hf``) or a
    ``torch.save`` file: a state dict, bare or under ``state_dict`` / ``model`` / ``state_dict_ema`` (timm's
    train.py checkpoints, ``args`` and all), with ``module.`` (DataParallel/DDP) or ``_orig_mod.``
    (``torch.compile``) key prefixes or none; the classifier's keys are ignored. It is read by
    :func:`~maivar.extraction.checkpoints.load_state_dict_file` rather than timm's ``load_checkpoint``: that
    refuses any checkpoint with a pickled class but ``argparse.Namespace`` (even ``numpy.float64``), prefers
    EMA weights, and fails with torch's multi-line key-mismatch errors or a bare ``FileNotFoundError``.
    """
    import timm

    if not timm.is_model(name):
        raise PipelineError(f"unknown timm model {name!r} in extract_audio.backbone: see timm.list_models()")
    torch.manual_seed(seed)
    use_timm_weights = bool(pretrained) and not checkpoint
    try:
        model = timm.create_model(name, pretrained=use_timm_weights, num_classes=0)
    except Exception as exc:
        if not use_timm_weights:
            raise
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PipelineError(
            f"timm cannot load pretrained weights for {name} ({first}): connect once to fill its cache, "
            "or set extract_audio.checkpoint to a state_dict file"
        ) from None
    if checkpoint:
        classifier = model.pretrained_cfg.get("classifier") if hasattr(model, "pretrained_cfg") else None
        ignore = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier or []))
        load_checkpoint_into(model, checkpoint, ignore_prefixes=ignore)
        source = f"checkpoint:{checkpoint}"
    elif use_timm_weights:
        source = "timm-pretrained"
    else:
        warn_random_weights(f"audio backbone {name}", seed)
        source = "random"
    model.eval()
    return model, Weights(source, source != "random", weights_sha256(model))




def normalization(model: nn.Module, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``imagenet``: ImageNet's mean/std (the authors' notebook); ``model``: the timm model's own."""
    if name == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if name == "model":
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    raise ValueError(f"normalization must be imagenet or model (got {name!r})")


class _Rows(Dataset):
    def __init__(self, rows: Sequence[np.ndarray]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.rows[i]))


def flip_variants(images: torch.Tensor) -> torch.Tensor:
    """B x H x W x C images -> 4B: the batch as drawn, mirrored left-right (time reversed), upside down (bins
    reversed), and both; in the order of :data:`FLIPS`, variant-major."""
    return torch.cat([images, images.flip(2), images.flip(1), images.flip(1, 2)])


def preprocess(images: torch.Tensor, *, input_size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """B x S x S x 3 uint8 -> B x 3 x input_size x input_size float, normalised (channels_last layout)."""
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
    precision: str = "fp32",
) -> np.ndarray:
    """N x D float32 pooled features of ``images`` (any row-indexable N x S x S x 3 uint8 source); with
    ``flips``, N x 4 x D: the features of each image's four flip variants (:data:`FLIPS`, variant 0 unflipped).

    With a frozen backbone, storing the four variants once is exactly the paper's random flips: the heads draw
    one variant per clip per epoch (:mod:`maivar.heads.training`) instead of the backbone seeing a new flip.

    With a ``journal`` (:mod:`maivar.extraction.resume`), finished batches are journaled, and the images an
    interrupted run already finished are taken from it.
    """
    n = len(images)
    out = np.empty((n, len(FLIPS), int(model.num_features)) if flips else (n, int(model.num_features)),
                   dtype=np.float32)
    if n == 0:
        return out
    done = journal.load(range(0, n)) if journal is not None else Resumed()
    if done.stop:
        out[: done.stop] = np.concatenate(done.features)
        log.info("resuming: %d of %d images were done by an interrupted run (%s)", done.stop, n, journal.dir)
    for indices, feats in _feature_batches(
        model, images, [range(done.stop, n)], input_size=input_size, mean=mean, std=std, batch_size=batch_size,
        workers=workers, device=device, journal=journal, flips=flips, precision=precision, progress=progress,
        total=n, initial=done.stop,
    ):
        out[indices[0] : indices[-1] + 1] = feats
    return out


@torch.inference_mode()
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
    total: int,
    initial: int,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """The features of the images of ``spans`` (ascending, disjoint ranges: the whole input, or a rank's
    unfinished blocks), a batch at a time: ``(indices, features)``; a batch never spans two spans. With a
    ``journal``, every batch is journaled, and written at once when it ends a span. ``total`` / ``initial``:
    the progress bar's."""
    batches = [list(range(b, min(b + batch_size, span.stop))) for span in spans
               for b in range(span.start, span.stop, batch_size)]
    if not batches:
        return
    span_stops = {span.stop for span in spans}
    on_cuda = device.type == "cuda"
    loader = DataLoader(
        _Rows(images), batch_sampler=batches, num_workers=workers, pin_memory=on_cuda,
        persistent_workers=False, multiprocessing_context=default_start_method() if workers else None,
    )
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    guard = OomGuard(batch_size)

    def forward(chunk: torch.Tensor) -> torch.Tensor:
        b = len(chunk)
        x = preprocess(flip_variants(chunk) if flips else chunk, input_size=input_size, mean=mean_t, std=std_t)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            feats = model(x).float()
        return feats.reshape(len(FLIPS), b, -1).transpose(0, 1) if flips else feats

    try:
        with tqdm(total=total, initial=initial, desc="audio features", unit="img", disable=not progress,
                  mininterval=1.0) as bar:
            for indices, batch in zip(batches, loader, strict=True):
                feats = guard(forward, batch.to(device, non_blocking=on_cuda)).cpu().numpy()
                if journal is not None:
                    journal.add(indices[0], indices[-1] + 1, indices, feats, [])
                    if indices[-1] + 1 in span_stops:
                        journal.write()  # a finished block is on disk at once
                bar.update(len(batch))
                yield indices, feats
    finally:
        if journal is not None:
            journal.write_quietly()  # the finished batches survive an interruption


@dataclass
class _AudioJob:
    """What extract_audio computes with, set up once per process (:func:`_audio_job`)."""

    images_path: str | Path
    source: object  # the image store's ids, labels, rejections and attributes (open_store, no data)
    model: nn.Module
    device: torch.device
    precision: str
    mean: tuple
    std: tuple
    flips: bool
    attrs: dict
    journal: Journal
    spans: list[range]
    p: dict
    runtime: dict
    weights_source: str


def _audio_job(images_path: str | Path, out_path: str | Path, p: dict, runtime: dict, world: World) -> _AudioJob:
    source = open_store(images_path, "images", load_data=False)
    device = rank_device(select_device(str(runtime["device"])), world)
    model, weights = create_audio_backbone(
        str(p["backbone"]), pretrained=bool(p["pretrained"]), checkpoint=p["checkpoint"], seed=int(p["seed"])
    )
    folded = prepare_for_inference(model, device, compile_model=bool(runtime["compile"]),
                                   fold_batchnorm=bool(p["fuse_conv_bn"]), input_size=int(p["input_size"]))
    mean, std = normalization(model, str(p["normalization"]))
    flips = bool(p["flips"])
    precision = check_precision(p["precision"], "extract_audio.precision")
    warn_if_emulated(device, precision, "extract_audio.precision")
    attrs = {
        "backbone": p["backbone"], "input_size": int(p["input_size"]), "normalization": p["normalization"],
        "mean": list(mean), "std": list(std), "device": device.type, "dtype": compute_dtype(precision),
        "conv_bn_folded": folded, "representation": source.attrs.get("representation"), **weights.attrs(),
        # only with flips: a store without them is N x D, as it was before the option existed
        **({"flips": list(FLIPS)} if flips else {}),
    }
    batch_size = int(runtime["batch_size"])
    # finished batches of an interrupted run (or of other ranks, other machines) with the same images and
    # settings are reused (maivar.extraction.resume); the device is not part of what they depend on
    journal = Journal(out_path, {"attrs": {k: v for k, v in attrs.items() if k != "device"}, "batch_size": batch_size,
                                 "images": file_identity(images_path), "ids": source.ids}, device=device.type)
    return _AudioJob(images_path, source, model, device, precision, mean, std, flips, attrs, journal,
                     blocks(len(source.ids), batch_size), p, runtime, weights.source)


def _fill_audio(job: _AudioJob, world: World, threads: int) -> dict:
    """Compute this rank's unfinished blocks into the journal; a summary for the log."""
    mine, todo = rank_todo(job.journal, job.spans, world, "images")
    if world.rank == 0:
        log.info("%d audio images -> %s at %d px on %s, %d blocks", len(job.source.ids), job.p["backbone"],
                 job.p["input_size"], job.device, len(job.spans))
    images = LazyRows(job.images_path, "images")
    try:
        for _ in _feature_batches(
            job.model, images, todo, input_size=int(job.p["input_size"]), mean=job.mean, std=job.std,
            batch_size=int(job.runtime["batch_size"]),
            workers=rank_workers(resolve_workers(job.runtime["workers"]), world), device=job.device,
            journal=job.journal, flips=job.flips, precision=job.precision, progress=world.rank == 0,
            total=sum(map(len, todo)), initial=0,
        ):
            pass  # journaled as they come: the store is assembled from the journal
    finally:
        images.close()
    job.journal.write()
    return rank_summary(world, mine, todo, job.device, threads, rejected=0)


def extract_audio_stage(images_path: str | Path, out_path: str | Path, p: dict, runtime: dict) -> None:
    """Stage extract_audio: the image store at ``images_path`` -> the feature store at ``out_path``.

    ``p`` is the ``extract_audio`` params section, ``runtime`` its machine settings (``device``, ``workers``,
    ``threads``, ``processes``, ``batch_size``, ``compile``: :func:`maivar.core.params.runtime_settings`).
    The output holds ``features`` N x D float32, ids/labels
    aligned with the images, the input's rejections carried over, and attributes recording the backbone,
    input size, normalisation, the device and weights (source, sha256). With ``runtime.processes`` > 1, or
    under torchrun, data parallel (:mod:`maivar.extraction.data_parallel`).
    """
    n_images = len(open_store(images_path, "images", load_data=False).ids)
    run_stage(EXTRACT_AUDIO, (images_path, out_path, p, runtime), len(blocks(n_images, int(runtime["batch_size"]))),
              select_device(str(runtime["device"])).type)


def _assemble_audio(job: _AudioJob, out_path: str | Path, done: Resumed) -> None:
    """The store, from every block's journaled features, in the images' order."""
    dim = int(job.model.num_features)
    if done.features:
        feats = np.concatenate(done.features)
    else:
        feats = np.empty((0, len(FLIPS), dim) if job.flips else (0, dim), dtype=np.float32)
    source = job.source
    attrs = {**job.attrs, "device": ",".join(sorted(done.devices)) or job.device.type}
    with create_store(out_path, data_name="features", n=len(feats), item_shape=feats.shape[1:],
                      dtype=np.float32) as w:
        if len(feats):
            w.write_rows(0, feats)
        w.finish(source.ids, source.labels, source.rejected, attrs)
    job.journal.discard()
    log.info("wrote %s: %s features (weights: %s), %d rejected upstream", out_path, " x ".join(map(str, feats.shape)),
             job.weights_source, len(source.rejected))


EXTRACT_AUDIO = Extraction("images", _audio_job, _fill_audio, _assemble_audio)
