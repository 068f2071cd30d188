"""The heads' model files (``models/*_mlp.pt``, docs/CONTRACTS.md): saved atomically, loaded safely.

A file holds ``state_dict``, ``config`` (the :class:`~maivar.heads.mlp.MLP`'s constructor arguments),
``classes`` (label -> class name), ``feature_stats`` (the normalization fitted on the training split) and
what the stage adds (modality, history, excluded clips). It is read with ``weights_only=True``: loading a
model file never runs code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from maivar.core.atomic import atomic_path
from maivar.core.errors import PipelineError
from maivar.core.rejections import Rejection

from .mlp import MLP, build_mlp


def save_model(path: str | Path, model: MLP, *, classes: Sequence[str], extra: dict | None = None) -> None:
    """``torch.save`` the docs/CONTRACTS.md dict atomically."""
    payload = {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": dict(model.config),
        "classes": {i: name for i, name in enumerate(classes)},
        "feature_stats": {"mean": model.mean.detach().clone(), "std": model.std.detach().clone()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path) -> tuple[MLP, dict]:
    """The :class:`MLP` saved at ``path`` (eval mode) and the whole saved dict."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: run the stage that trains it first (dvc repro)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build_mlp(saved["config"])
        model.load_state_dict(saved["state_dict"])
    except Exception as exc:  # noqa: BLE001 - any unreadable model file is the same user-facing problem
        raise PipelineError(f"{path} is not a readable model file ({type(exc).__name__}): rerun dvc repro") from None
    model.eval()
    return model, saved


def rejection_records(excluded: Sequence[Rejection]) -> list[dict]:
    return [{"id": r.id, "reason": r.reason, "detail": r.detail} for r in excluded]
