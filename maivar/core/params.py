"""Load ``params.yaml``, the one source of truth, and check the values that have a fixed vocabulary."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .errors import PipelineError


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 (and DVC) do: ``1e-05`` is a float.

    PyYAML follows YAML 1.1, where a float needs a dot: ``1e-05`` would be the *string* "1e-05". DVC writes
    small floats that way (``dvc exp run -S fusion_mlp.l1=1.0e-5`` leaves ``l1: 1e-05`` in params.yaml), so a
    stage would compute with a string."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run stages from the repository root")
    try:
        params = yaml.load(path.read_text(), Loader=ParamsLoader)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise PipelineError(f"{path} must hold a mapping of sections")
    return params


def runtime_settings(params: dict, stage: str) -> dict:
    """A stage's machine settings: params.yaml's ``runtime`` section (``device``, ``workers``) with the stage's own
    subsection (e.g. ``runtime.extract_audio.batch_size``) on top.

    No stage lists ``runtime`` in dvc.yaml: changing it never reruns a stage. Only what makes a stage faster
    belongs there (devices, worker and batch counts, compilation), never what changes its results."""
    runtime = params.get("runtime")
    if not isinstance(runtime, dict):
        raise PipelineError("params.yaml has no runtime section (devices, workers, batch sizes): copy it from the "
                            "repository's params.yaml")
    shared = {k: v for k, v in runtime.items() if not isinstance(v, dict)}
    own = runtime.get(stage) or {}
    return {**shared, **own}


def resolve_workers(workers: int | None) -> int | None:
    """0 or null means all cores (``None`` for :func:`maivar.core.parallel.guarded_map`)."""
    return None if not workers else int(workers)


def number(section: dict, key: str, where: str, kind: type = float):
    """``section[key]`` as ``kind`` (float or int); anything else is a one-line error naming ``where.key``."""
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise PipelineError(f"params.yaml {where}.{key} must be {'an integer' if kind is int else 'a number'}, "
                            f"got {value!r}")
    return kind(value)
