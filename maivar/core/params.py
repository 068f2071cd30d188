"""Load ``params.yaml``, the one source of truth, and check the values that have a fixed vocabulary."""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import PipelineError


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run stages from the repository root")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping of sections")
    return params


def resolve_workers(workers: int | None) -> int | None:
    """0 or null means all cores (``None`` for :func:`maivar.core.parallel.guarded_map`)."""
    return None if not workers else int(workers)
