"""Benchmark the heads (stages train_audio / train_video / train_fusion) at the paper's scale.

Features shaped like the UCF101 audio subset of split 1 (51 classes, 4893 train / 1944 test clips; audio
1536-d, video 2048-d after the default ``segments: mean``; fusion 3584-d), drawn as class means plus noise
(audio the weaker modality). Times, in the same run, per epoch and per head:

- our route: :func:`maivar.heads.training.train_head` with the params.yaml settings (deterministic algorithms,
  ``train.threads`` CPU threads, seeded in-memory batches; test accuracy measured every epoch);
- the reference route: the usual PyTorch loop, ``DataLoader(TensorDataset(...), shuffle=True)`` over the
  same model, loss and optimiser with torch's default thread count and no determinism switches, and the
  same loop again on one thread (``ref 1-thread``).

Our epoch also scores the test split (the Fig. 6 curve); the reference epochs do not.

    .venv/bin/python benchmarks/bench_heads.py [--epochs 2] [--train 4893] [--test 1944]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from maivar.core.params import load_params
from maivar.heads.join import fit_normalisation
from maivar.heads.mlp import MLP, fusion_from_video
from maivar.heads.training import head_loss, set_determinism, train_head

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train", type=int, default=4893)
    ap.add_argument("--test", type=int, default=1944)
    ap.add_argument("--classes", type=int, default=51)
    args = ap.parse_args()
    p = load_params(REPO / "params.yaml")
    tr, heads = p["train"], {"audio": p["audio_mlp"], "video": p["video_mlp"], "fusion": p["fusion_mlp"]}
    rng = np.random.default_rng(0)
    n = args.train + args.test
    xa, y = features(n, 1536, args.classes, 0.15, rng)
    xv, _ = features(n, 2048, args.classes, 0.3, rng)
    data = {"audio": xa, "video": xv, "fusion": np.concatenate([xa, xv], 1)}
    default_threads = torch.get_num_threads()
    print(f"heads at paper scale: {args.train} train / {args.test} test clips, {args.classes} classes, "
          f"{args.epochs} epoch(s); ours: {tr['threads']} thread(s), deterministic; reference: DataLoader, "
          f"{default_threads} thread(s)")
    print(f"{'head':7} {'inputs':>6} {'batch':>5} {'ours s/epoch':>13} {'ref s/epoch':>12} {'ref/ours':>9} "
          f"{'ref 1-thread':>13} {'ratio':>6} {'test acc':>9}")
    video_model = None
    for head, hp in heads.items():
        x = data[head]
        mean, std = fit_normalisation(x[: args.train])
        # ours
        set_determinism(tr["seed"], tr["threads"])
        if head == "fusion":
            model = fusion_from_video(video_model, 1536, init=hp["init"])
        else:
            model = MLP(x.shape[1], hp["hidden"], args.classes, hp["dropout"])
        model.set_normalisation(torch.tensor(mean), torch.tensor(std))
        t0 = time.perf_counter()
        hist = train_head(model, x[: args.train], y[: args.train], x[args.train :], y[args.train :],
                          epochs=args.epochs, lr=hp["lr"], batch_size=hp["batch_size"], l1=hp["l1"], seed=tr["seed"])
        ours = (time.perf_counter() - t0) / args.epochs
        if head == "video":
            video_model = model
        # reference
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(default_threads)
        ref_model = MLP(x.shape[1], model.config["hidden"], args.classes, model.config["dropout"])
        ref_model.set_normalisation(torch.tensor(mean), torch.tensor(std))
        ref = reference_epochs(ref_model, x[: args.train], y[: args.train], epochs=args.epochs, lr=hp["lr"],
                               batch_size=hp["batch_size"], l1=hp["l1"])
        # the same reference loop on one thread: separates the thread count from the loop itself
        torch.set_num_threads(1)
        ref_model = MLP(x.shape[1], model.config["hidden"], args.classes, model.config["dropout"])
        ref_model.set_normalisation(torch.tensor(mean), torch.tensor(std))
        ref1 = reference_epochs(ref_model, x[: args.train], y[: args.train], epochs=args.epochs, lr=hp["lr"],
                                batch_size=hp["batch_size"], l1=hp["l1"])
        print(f"{head:7} {x.shape[1]:6d} {hp['batch_size']:5d} {ours:13.3f} {ref:12.3f} {ref / ours:9.2f} "
              f"{ref1:13.3f} {ref1 / ours:6.2f} {hist[-1]['test/acc']:8.2f}%")
    full = {h: heads[h]["epochs"] for h in heads}
    print(f"epochs in params.yaml: {full} (multiply the s/epoch columns for a full stage)")


if __name__ == "__main__":
    main()
