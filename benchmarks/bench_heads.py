"""Benchmark the heads (stages train_audio / train_video / train_fusion) at the paper's scale.

Features shaped like the UCF101 audio subset of split 1 (51 classes, 4893 train / 1944 test clips; audio
1536-d, video 2048-d after the default ``segments: mean``; fusion 3584-d), drawn as class means plus noise
(audio the weaker modality). Times, in the same run, per epoch and per head:

- our route: :func:`maivar.heads.training.train_head` with the params.yaml settings (deterministic algorithms,
  ``train.threads`` CPU threads, seeded in-memory batches, fused Adam with the L1 gradient written into the
  weights' gradients; test accuracy measured every epoch), on ``--device``;
- the reference route: the usual PyTorch loop, ``DataLoader(TensorDataset(...), shuffle=True)`` over the
  same model, loss and optimizer with torch's default thread count and no determinism switches, and the
  same loop again on one thread (``ref 1-thread``).

Our epoch also scores the test split (the Fig. 6 curve); the reference epochs do not.

Then one training step of ours (:class:`maivar.heads.training.HeadStep`, the loop's body) against its arithmetic:
the matrix products a step needs (forward; weight gradients; input gradients of every layer but the first, whose
input needs none), in MFLOP and timed alone with the same threads (``GEMMs ms``): the ``step/GEMMs`` column is
how far a step is from its arithmetic (1.0 = no overhead at all; the fused Adam and the L1 term read and write
every weight a few times, the rest is per-op overhead).

    .venv/bin/python benchmarks/bench_heads.py [--epochs 2] [--train 4893] [--test 1944] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from maivar.core.params import load_params
from maivar.heads.join import fit_normalization
from maivar.heads.mlp import MLP, fusion_from_video
from maivar.heads.training import HeadStep, head_loss, head_optimizer, set_determinism, standardized, train_head

REPO = Path(__file__).resolve().parents[1]


def features(n: int, dim: int, classes: int, signal: float, rng) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % classes
    means = rng.normal(size=(classes, dim)).astype(np.float32)
    x = np.maximum(signal * means[y] + rng.normal(size=(n, dim)).astype(np.float32), 0)
    return x.astype(np.float32), y.astype(np.int64)


def reference_epochs(model, x, y, *, epochs, lr, batch_size, l1) -> float:
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=batch_size, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            loss = head_loss(model, model(xb), yb, l1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - t0) / epochs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, *, steps: int, repeats: int = 3) -> float:
    """Seconds per call of ``fn``: the best of ``repeats`` runs of ``steps`` calls (after a few warm-up calls)."""
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def step_vs_arithmetic(model, x, y, *, batch_size, lr, l1, device, steps) -> tuple[float, float, float]:
    """(step s, GEMMs s, MFLOP) for one training step of ``model`` (a copy is trained) on ``batch_size`` rows."""
    model = copy.deepcopy(model).to(device).train()
    step = HeadStep(model, head_optimizer(model, lr), l1)
    xs = standardized(model, x[: batch_size * 8], device)
    ys = torch.tensor(y[: len(xs)], dtype=torch.int64, device=device)
    batches = [torch.arange(i, i + batch_size, device=device) for i in range(0, len(xs), batch_size)]
    count = itertools.count()

    def one_step():
        idx = batches[next(count) % len(batches)]
        step(xs.index_select(0, idx), ys.index_select(0, idx))

    step_s = timed(one_step, device, steps=steps)
    # the step's matrix products alone, on tensors of the same shapes
    shapes = [(m.in_features, m.out_features) for m in model.linears()]
    a = [torch.randn(batch_size, i, device=device) for i, _ in shapes]
    w = [torch.randn(o, i, device=device) for i, o in shapes]
    g = [torch.randn(batch_size, o, device=device) for _, o in shapes]

    def gemms():
        for k in range(len(shapes)):
            torch.mm(a[k], w[k].t())  # forward
            torch.mm(g[k].t(), a[k])  # weight gradient
            if k:
                torch.mm(g[k], w[k])  # input gradient (the first layer's input needs none)

    gemm_s = timed(gemms, device, steps=steps)
    mflop = sum(2 * batch_size * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(shapes)) / 1e6
    return step_s, gemm_s, mflop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train", type=int, default=4893)
    ap.add_argument("--test", type=int, default=1944)
    ap.add_argument("--classes", type=int, default=51)
    ap.add_argument("--device", default="cpu", help="where our route trains (the reference loops stay on the CPU)")
    ap.add_argument("--steps", type=int, default=100, help="steps timed for the step-against-arithmetic table")
    args = ap.parse_args()
    device = torch.device(args.device)
    p = load_params(REPO / "params.yaml")
    tr, heads = p["train"], {"audio": p["audio_mlp"], "video": p["video_mlp"], "fusion": p["fusion_mlp"]}
    rng = np.random.default_rng(0)
    n = args.train + args.test
    xa, y = features(n, 1536, args.classes, 0.15, rng)
    xv, _ = features(n, 2048, args.classes, 0.3, rng)
    data = {"audio": xa, "video": xv, "fusion": np.concatenate([xa, xv], 1)}
    default_threads = torch.get_num_threads()
    print(f"heads at paper scale: {args.train} train / {args.test} test clips, {args.classes} classes, "
          f"{args.epochs} epoch(s); ours: {tr['threads']} thread(s), deterministic, on {device}; reference: "
          f"DataLoader, {default_threads} thread(s)")
    print(f"{'head':7} {'inputs':>6} {'batch':>5} {'ours s/epoch':>13} {'ref s/epoch':>12} {'ref/ours':>9} "
          f"{'ref 1-thread':>13} {'ratio':>6} {'test acc':>9}")
    video_model, steps = None, []
    for head, hp in heads.items():
        x = data[head]
        mean, std = fit_normalization(x[: args.train])
        # ours
        set_determinism(tr["seed"], tr["threads"])
        if head == "fusion":
            model = fusion_from_video(video_model, 1536, init=hp["init"])
        else:
            model = MLP(x.shape[1], hp["hidden"], args.classes, hp["dropout"])
        model.set_normalization(torch.tensor(mean), torch.tensor(std))
        start = copy.deepcopy(model)
        t0 = time.perf_counter()
        hist = train_head(model, x[: args.train], y[: args.train], x[args.train :], y[args.train :],
                          epochs=args.epochs, lr=hp["lr"], batch_size=hp["batch_size"], l1=hp["l1"], seed=tr["seed"],
                          device=device)
        ours = (time.perf_counter() - t0) / args.epochs
        steps.append((head, hp["batch_size"], *step_vs_arithmetic(start, x[: args.train], y[: args.train],
                                                                  batch_size=hp["batch_size"], lr=hp["lr"], l1=hp["l1"],
                                                                  device=device, steps=args.steps)))
        if head == "video":
            video_model = model
        # reference
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(default_threads)
        ref_model = MLP(x.shape[1], model.config["hidden"], args.classes, model.config["dropout"])
        ref_model.set_normalization(torch.tensor(mean), torch.tensor(std))
        ref = reference_epochs(ref_model, x[: args.train], y[: args.train], epochs=args.epochs, lr=hp["lr"],
                               batch_size=hp["batch_size"], l1=hp["l1"])
        # the same reference loop on one thread: separates the thread count from the loop itself
        torch.set_num_threads(1)
        ref_model = MLP(x.shape[1], model.config["hidden"], args.classes, model.config["dropout"])
        ref_model.set_normalization(torch.tensor(mean), torch.tensor(std))
        ref1 = reference_epochs(ref_model, x[: args.train], y[: args.train], epochs=args.epochs, lr=hp["lr"],
                                batch_size=hp["batch_size"], l1=hp["l1"])
        print(f"{head:7} {x.shape[1]:6d} {hp['batch_size']:5d} {ours:13.3f} {ref:12.3f} {ref / ours:9.2f} "
              f"{ref1:13.3f} {ref1 / ours:6.2f} {hist[-1]['test/acc']:8.2f}%")
    print(f"\none step of ours on {device} ({tr['threads']} thread(s)) against its arithmetic:")
    print(f"{'head':7} {'batch':>5} {'MFLOP':>7} {'step ms':>8} {'GEMMs ms':>9} {'step/GEMMs':>11} {'GFLOP/s':>8}")
    for head, batch, step_s, gemm_s, mflop in steps:
        print(f"{head:7} {batch:5d} {mflop:7.1f} {step_s * 1e3:8.3f} {gemm_s * 1e3:9.3f} {step_s / gemm_s:11.2f} "
              f"{mflop / 1e3 / step_s:8.1f}")
    full = {h: heads[h]["epochs"] for h in heads}
    print(f"epochs in params.yaml: {full} (multiply the s/epoch columns for a full stage)")


if __name__ == "__main__":
    main()
