"""Load ``params.yaml``, the one source of truth, as YAML 1.2 reads it (the checks are :mod:`maivar.settings`)."""

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
