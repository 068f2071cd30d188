"""Train the heads: standardize, fit with cross-entropy + L1 (Adam), log each epoch with dvclive.

:func:`train_single_modality` (stages train_audio, train_video) and :func:`train_fusion` (stage
train_fusion, the paper's Algorithm 1) read the features through :mod:`maivar.heads.join`, fit with
:func:`fit` and save with :mod:`maivar.heads.model_files`.

Determinism: :func:`set_determinism` seeds torch, turns on deterministic algorithms and fixes the number
of CPU threads; batches are drawn with a seeded ``torch.Generator``; so the same features and params give
the same weights and metrics, bit for bit, on the same machine.

Speed (:func:`train_head`, :class:`HeadStep`): a step is a few matrix products on 16-128 rows, so what
surrounds them decides its time. The features are standardized once, on the training device; the L1
gradient rides in the weight gradient's matrix product, written into gradient buffers kept between steps;
Adam is fused; losses and counts stay on the device until the epoch ends. The numbers are those of the
straightforward loop (``model(x[idx])``, :func:`head_loss`, ``backward``, the same fused Adam): weights and
accuracies bit for bit on this machine (tested to float32 rounding), the logged loss to its last bits.

Memory (``memory_mb``, ``runtime.heads.memory_mb``): features that would pass it held twice (the rows and their
standardized copy) are read from a file beside the model a batch at a time instead (:mod:`maivar.heads.rows`):
the same numbers, bit for bit; what the stage holds then does not grow with the dataset's features.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from maivar.core.errors import PipelineError
from maivar.core.manifest import read_manifest
from maivar.settings.heads import FusionSettings, HeadSettings, TrainSettings, VideoHeadSettings

from .batches import batch_source
from .join import (
    HEAD_COLUMNS,
    Features,
    check_classes,
    class_names,
    fit_normalization,
    join_modalities,
    load_features,
    split_rows,
)
from .mlp import MLP, check_video_fits, fusion_from_video
from .model_files import load_model, rejection_records, save_model
from .rows import DiskRows, spill_beside

log = logging.getLogger(__name__)


def set_determinism(seed: int, threads: int) -> None:
    """Seed torch, require deterministic algorithms and fix the CPU thread count.

    Also sets ``CUBLAS_WORKSPACE_CONFIG`` (unless already set) for cuBLAS's deterministic mode on CUDA, and
    turns off ``torch.utils.deterministic.fill_uninitialized_memory``: with deterministic algorithms on, torch
    otherwise fills every new tensor with NaN, a debugging aid (no op here reads memory it has not written;
    the results are the same bit for bit) that costs a head's training step 4-7% here.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.set_num_threads(max(1, int(threads)))


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of absolute values of every Linear layer's weights (biases and normalization excluded)."""
    return sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.Linear))


def head_loss(model: nn.Module, logits: torch.Tensor, y: torch.Tensor, l1: float) -> torch.Tensor:
    """Cross-entropy plus ``l1`` times :func:`l1_penalty` (paper Eq. 3)."""
    return nn.functional.cross_entropy(logits, y) + l1 * l1_penalty(model)


def head_optimizer(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam (torch's defaults: betas 0.9/0.999, eps 1e-8, no weight decay) in its fused form: one pass over
    each parameter per step on CPU and one kernel on CUDA, instead of a handful of passes."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits for ``x`` (N x F) in eval mode, as float32."""
    model.eval()
    out = [model(torch.tensor(x[i : i + batch_size], dtype=torch.float32)) for i in range(0, len(x), batch_size)]
    if not out:
        return np.zeros((0, model.config["num_classes"]), np.float32)
    return torch.cat(out).numpy()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in percent (0 for no rows)."""
    return float((logits.argmax(axis=1) == y).mean() * 100.0) if len(y) else 0.0


class _LinearInto(torch.autograd.Function):
    """``x @ W.T + b`` (what :class:`~torch.nn.Linear` computes) whose backward writes the weight and bias
    gradients into the given buffers (the parameters' ``.grad``, kept between steps) instead of handing new
    tensors to autograd: nothing of a weight's size is allocated, copied or accumulated a step.

    With ``l1`` the weight buffer holds ``sgn(W)`` when the backward starts, and the L1 gradient rides in the
    weight gradient's matrix product: ``grad_w = l1 * sgn(W) + grad.T @ x`` in one in-place ``addmm``,
    instead of autograd's ``abs -> sum -> backward`` passes, temporaries and accumulation. The same numbers as
    :func:`head_loss`'s gradient: ``l1 * sgn(W)`` is exact and added once to the product (bit for bit on this
    machine's CPU, tested to float32 rounding).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, grad_w, grad_b, l1):
        ctx.save_for_backward(x, weight)
        ctx.buffers, ctx.l1 = (grad_w, grad_b), l1
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_w, grad_b = ctx.buffers
        grad_x = grad.mm(weight) if ctx.needs_input_grad[0] else None
        if ctx.l1:
            grad_w.addmm_(grad.t(), x, beta=ctx.l1)
        else:
            torch.mm(grad.t(), x, out=grad_w)
        torch.sum(grad, 0, out=grad_b)
        return grad_x, None, None, None, None, None


class HeadStep:
    """One training step of a head (Adam on cross-entropy + ``l1`` * sum|W| over its Linear weights, dropout as
    in :class:`MLP`) with no host synchronisation: :meth:`__call__` returns the step's loss and its number of
    correct predictions as tensors on the model's device.

    Per step: one pass over each weight writes ``sgn(W)`` into its gradient buffer, the penalty's value (for
    the logs) is ``sgn(W) . W``, the backward adds the cross-entropy gradient to ``l1 * sgn(W)`` in the matrix
    product itself (:class:`_LinearInto`), and the optimizer (:func:`head_optimizer`) is fused: each weight is
    read and written a handful of times, and nothing of its size is allocated. The gradients equal
    :func:`head_loss`'s (bit for bit on this machine's CPU, tested to float32 rounding); the logged loss may
    differ from :func:`head_loss`'s in the last bits (the penalty is summed in another order).
    """

    def __init__(self, model: MLP, optimizer: torch.optim.Optimizer, l1: float):
        self.model, self.optimizer, self.l1 = model, optimizer, float(l1)
        self.linears = model.linears()
        self.grads = [(torch.zeros_like(m.weight), torch.zeros_like(m.bias)) for m in self.linears]
        covered = {id(p) for m in self.linears for p in (m.weight, m.bias)}
        if any(id(p) not in covered for p in model.parameters()):
            raise PipelineError("HeadStep trains an MLP's Linear layers only")

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on the standardized rows ``xb`` (see :func:`~maivar.heads.batches.standardized`) with labels ``yb``."""
        with torch.no_grad():
            for m, (grad_w, grad_b) in zip(self.linears, self.grads, strict=True):
                m.weight.grad, m.bias.grad = grad_w, grad_b
                if self.l1:
                    torch.sgn(m.weight, out=grad_w)
            if self.l1:
                penalty = sum(torch.dot(g.view(-1), m.weight.view(-1)) for m, (g, _) in zip(self.linears, self.grads,
                                                                                            strict=True))
        h, grads = xb, iter(self.grads)
        for layer in self.model.layers:
            h = _LinearInto.apply(h, layer.weight, layer.bias, *next(grads), self.l1) \
                if isinstance(layer, nn.Linear) else layer(h)
        ce = nn.functional.cross_entropy(h, yb)
        ce.backward()
        self.optimizer.step()
        with torch.no_grad():
            loss = ce.detach() + self.l1 * penalty if self.l1 else ce.detach()
            return loss, (h.argmax(1) == yb).sum()


@torch.no_grad()
def _count_correct(model: MLP, chunks: Iterator[torch.Tensor], y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Correct top-1 predictions of ``model`` (eval mode) on the standardized rows ``chunks`` (of ``batch_size``
    rows, the last fewer), as a tensor on their device."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    for i, x in zip(range(0, len(y), batch_size), chunks, strict=False):
        correct += (model.layers(x).argmax(1) == y[i : i + batch_size]).sum()
    return correct


def train_head(
    model: MLP,
    x_train: np.ndarray | DiskRows,
    y_train: np.ndarray,
    x_test: np.ndarray | DiskRows,
    y_test: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    l1: float,
    seed: int,
    live=None,
    desc: str | None = None,
    variants_train: np.ndarray | DiskRows | None = None,
    device: str | torch.device | None = None,
    train_rows: np.ndarray | None = None,
    test_rows: np.ndarray | None = None,
) -> list[dict]:
    """Adam on cross-entropy + L1; returns (and logs to ``live``) per-epoch train loss/acc and test acc.

    ``train_rows`` / ``test_rows`` (default: all): the rows of ``x_train`` (and ``variants_train``) /
    ``x_test`` to train / test on, read from them as they are standardized (the labels are the rows' own);
    the same numbers as passing ``x_train[train_rows]`` ..., without that copy.

    ``variants_train`` (n_train x V x D, flip variants of the first D columns of ``x_train``): each epoch, every
    training clip gets one variant drawn at random (a generator of its own, seeded from ``seed``, so that the
    batch order is the same with and without variants). The test rows are always the unflipped ``x_test``.

    ``device`` (default: where ``model`` is) runs the training there; the model comes back where it was. Features
    in memory are standardized once, on the device (so a step neither copies from the host nor standardizes);
    features in a file (:class:`~maivar.heads.rows.DiskRows`, past ``runtime.heads.memory_mb``) are read and
    standardized a batch at a time, with the same numbers. The batch order and flip draws come from seeded CPU
    generators (the same on every device), and each epoch's losses and counts stay on the device until its end:
    one host synchronisation an epoch.
    """
    if (len(x_train) if train_rows is None else len(train_rows)) == 0:
        raise PipelineError(f"{desc or 'head'}: no training clips")
    home = model.mean.device
    device = home if device is None else torch.device(device)
    model.to(device)
    try:
        return _train(model, x_train, y_train, x_test, y_test, epochs=epochs, lr=lr, batch_size=batch_size, l1=l1,
                      seed=seed, live=live, desc=desc, variants_train=variants_train, device=device,
                      train_rows=train_rows, test_rows=test_rows)
    finally:
        model.to(home)


TEST_BATCH = 4096  # test rows a forward pass when counting the correct ones


def _train(model, x_train, y_train, x_test, y_test, *, epochs, lr, batch_size, l1, seed, live, desc, variants_train,
           device, train_rows, test_rows) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    step = HeadStep(model, head_optimizer(model, lr), l1)
    if train_rows is not None:
        y_train = y_train[train_rows]
    if test_rows is not None:
        y_test = y_test[test_rows]
    n = len(y_train)
    rows = batch_source(model, x_train, train_rows, x_test, test_rows, variants_train, device)
    ys = torch.tensor(y_train, dtype=torch.int64, device=device)
    ys_test = torch.tensor(y_test, dtype=torch.int64, device=device)
    if variants_train is not None:
        flip_gen = torch.Generator().manual_seed(seed + 1)
    history = []
    for epoch in tqdm(range(epochs), desc=desc, unit="epoch", disable=desc is None, mininterval=1.0):
        model.train()
        if variants_train is not None:  # one flip variant per clip for this epoch
            rows.draw(torch.randint(variants_train.shape[1], (n,), generator=flip_gen))
        order = torch.randperm(n, generator=gen)
        on_device = order.to(device)
        batches = rows.order(order, on_device)
        # one slot a step, written in place: a list of each step's loss tensor grew the heap by ~150 KB a step
        # (each small tensor kept between the step's large temporaries), 180 MiB at 240,000 clips
        losses = torch.empty(-(-n // batch_size), dtype=torch.float32, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, n, batch_size):
            idx = on_device[start : start + batch_size]
            loss, right = step(rows.batch(batches[start : start + batch_size]), ys.index_select(0, idx))
            losses[start // batch_size] = loss
            correct += right
        test_correct = _count_correct(model, rows.test_chunks(TEST_BATCH), ys_test, TEST_BATCH)
        total = 0.0  # summed on the host in batch order, as float(loss) * batch rows
        for start, value in zip(range(0, n, batch_size), losses.tolist(), strict=True):
            total += value * (min(start + batch_size, n) - start)
        row = {
            "epoch": epoch + 1,
            "train/loss": total / n,
            "train/acc": 100.0 * int(correct) / n,
            "test/acc": int(test_correct) / len(y_test) * 100.0 if len(y_test) else 0.0,
        }
        history.append(row)
        if live is not None:
            for key in ("train/loss", "train/acc", "test/acc"):
                live.log_metric(key, round(row[key], 6))
            live.next_step()
    return history


def open_live(directory: str | Path):
    """A dvclive logger that never writes dvc.yaml or creates experiments (plots are declared in dvc.yaml)."""
    from dvclive import Live

    return Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)


def fit(
    features: Features,
    manifest: pd.DataFrame,
    model: MLP,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    l1: float,
    seed: int,
    live_dir: str | Path | None = None,
    normalize: slice | None = slice(None),
) -> list[dict]:
    """Fit ``model`` on the train rows of ``features`` and track the test rows (used by every training stage).

    ``normalize`` selects the input columns whose standardization is fitted here (all by default; the
    fusion stage fits only the audio columns when the video part was copied from the video MLP).
    """
    classes = class_names(manifest)
    tr, te = split_rows(features, manifest, "train"), split_rows(features, manifest, "test")
    check_classes(features.y[tr], classes, features.modality)
    log.info("%s: %d train / %d test clips, %d features, %d classes", features.modality, len(tr), len(te),
             features.x.shape[1], len(classes))
    if normalize is not None:
        mean, std = fit_normalization(features.x, tr)  # in chunks of the train rows: no copy of them
        with torch.no_grad():
            model.mean[normalize] = torch.from_numpy(mean[normalize])
            model.std[normalize] = torch.from_numpy(std[normalize])
    live = open_live(live_dir) if live_dir is not None else None
    try:
        # the train and test rows go to the device standardized, read from features.x: no copy of them on the host
        history = train_head(model, features.x, features.y, features.x, features.y, epochs=epochs, lr=lr,
                             batch_size=batch_size, l1=l1, seed=seed, live=live, desc=features.modality,
                             variants_train=features.variants, train_rows=tr, test_rows=te)
    finally:
        if live is not None:
            live.end()
    last = history[-1] if history else {}
    log.info("%s: train loss %.4f, train acc %.2f%%, test acc %.2f%%", features.modality,
             last.get("train/loss", float("nan")), last.get("train/acc", float("nan")),
             last.get("test/acc", float("nan")))
    return history



def train_single_modality(*, modality: str, manifest_path: str | Path, features_path: str | Path,
                          model_path: str | Path, live_dir: str | Path, head: HeadSettings,
                          train: TrainSettings, memory_mb: int) -> None:
    """Stages train_audio / train_video: an MLP on one modality's features, saved with its history.

    ``head`` is the ``audio_mlp`` / ``video_mlp`` section (for video, ``segments`` says how the segment features
    enter the MLP), ``train`` the shared ``train`` section, ``memory_mb`` ``runtime.heads.memory_mb``.
    """
    set_determinism(train.seed, train.threads)
    manifest = read_manifest(manifest_path, HEAD_COLUMNS, only=True)
    classes = class_names(manifest)
    segments = head.segments if isinstance(head, VideoHeadSettings) else None
    with spill_beside(model_path, memory_mb) as spill:
        features = load_features(features_path, manifest, modality, segments=segments, spill=spill)
        model = MLP(features.x.shape[1], head.hidden, len(classes), head.dropout)
        history = fit(features, manifest, model, epochs=head.epochs, lr=head.lr, batch_size=head.batch_size,
                      l1=head.l1, seed=train.seed, live_dir=live_dir)
    save_model(model_path, model, classes=classes, extra={
        "modality": modality, **({"segments": segments} if segments else {}),
        "excluded": rejection_records(features.excluded), "history": history,
        "features_attrs": {k: str(v) for k, v in features.attrs.items()},
    })


def train_fusion(*, manifest_path: str | Path, audio_path: str | Path, video_path: str | Path,
                 video_model_path: str | Path, model_path: str | Path, live_dir: str | Path, head: FusionSettings,
                 video_head: VideoHeadSettings, train: TrainSettings, memory_mb: int) -> None:
    """Stage train_fusion: the fusion MLP on ``[audio, video]``, initialized from the trained video MLP
    (paper Algorithm 1, :func:`~maivar.heads.mlp.fusion_from_video`) or from scratch (``head.init``).

    ``head`` is the ``fusion_mlp`` section, ``video_head`` the ``video_mlp`` one (its ``segments``
    says how the video features enter), ``train`` the shared ``train`` section, ``memory_mb``
    ``runtime.heads.memory_mb``.
    """
    set_determinism(train.seed, train.threads)
    manifest = read_manifest(manifest_path, HEAD_COLUMNS, only=True)
    classes = class_names(manifest)
    with spill_beside(model_path, memory_mb) as spill:
        audio = load_features(audio_path, manifest, "audio", spill=spill)
        video = load_features(video_path, manifest, "video", segments=video_head.segments, spill=spill)
        fused, _ = join_modalities(audio, video, spill=spill)
        audio_dim, video_dim = audio.x.shape[1], video.x.shape[1]
        del audio, video  # the joined rows are a copy: the memory holds one matrix of the clips, not two
        video_mlp, _ = load_model(video_model_path)
        check_video_fits(video_mlp.config, video_dim, len(classes))
        model = fusion_from_video(video_mlp, audio_dim, init=head.init)
        # Algorithm 1 keeps the video MLP's normalization for the video columns; fit only the audio columns.
        normalize = slice(0, audio_dim) if head.init == "video" else slice(None)
        history = fit(fused, manifest, model, epochs=head.epochs, lr=head.lr, batch_size=head.batch_size,
                      l1=head.l1, seed=train.seed, live_dir=live_dir, normalize=normalize)
    save_model(model_path, model, classes=classes, extra={
        "modality": "fusion", "init": head.init, "audio_features": int(audio_dim),
        "segments": video_head.segments, "excluded": rejection_records(fused.excluded), "history": history,
    })
