"""Presets: overlays of params.yaml run as named DVC experiments (``maivar preset presets/paper.yaml``).

A preset is a YAML file of params.yaml keys and values, dotted (``extract_audio.flips: true``) or nested
(``extract_audio: {flips: true}``), usually commented with where each value comes from. ``maivar preset``
checks every key against params.yaml (a typo is a one-line error, not a silently ignored setting) and runs
``dvc exp run -n <name> -S key=value ...``: DVC records the experiment with its params, its metrics and its
outputs, and ``dvc exp show`` lists it by name, beside the baseline and other experiments.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from maivar.core.errors import PipelineError
from maivar.core.params import load_params
from maivar.stage_deps import lookup

_MISSING = object()


def _leaves(mapping: dict, params: dict, prefix: str = "") -> dict:
    """Dotted keys of ``mapping``: a nested mapping is descended wherever params.yaml has a mapping too, so
    each key sets one value (``render: {colormaps: {mfcc: viridis}}`` sets ``render.colormaps.mfcc`` only)."""
    out = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(_lookup(params, dotted), dict):
            out.update(_leaves(value, params, dotted + "."))
        else:
            out[dotted] = value
    return out


def _lookup(params: dict, dotted: str):
    """``params``' value at the dotted key, or ``_MISSING``."""
    try:
        return lookup(params, dotted)
    except KeyError:
        return _MISSING


def load_preset(path: str | Path, params_path: str | Path = "params.yaml") -> dict:
    """The preset at ``path`` as ``{dotted key: value}``, every key checked against ``params_path``."""
    path, params_path = Path(path), Path(params_path)
    if not path.is_file():
        raise PipelineError(f"preset {path} does not exist")
    try:
        preset = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise PipelineError(f"cannot read preset {path}: {exc.strerror}") from None
    params = load_params(params_path)
    if not isinstance(preset, dict) or not preset:
        raise PipelineError(f"preset {path} must be a mapping of params.yaml keys to values")
    leaves = _leaves(preset, params)
    unknown = [k for k in leaves if _lookup(params, k) is _MISSING]
    if unknown:
        raise PipelineError(f"preset {path}: {', '.join(unknown)} not in {params_path} (a typo, or a parameter of "
                            "another maivar version)")
    return leaves


def check_overlay(preset: dict, params_path: str | Path = "params.yaml", *, extra: list[str] = (),
                  where: str = "the preset") -> None:
    """The settings checks of every stage (:mod:`maivar.settings`) on ``params_path`` with ``preset`` and the
    ``extra`` ``-S key=value`` settings on top, as the experiment will see it: a bad value is a one-line error
    now, not after the stages before the one that reads it have run."""
    import copy

    from maivar.settings.base import Params
    from maivar.settings.check import check_params_mapping

    params = Params(copy.deepcopy(load_params(params_path)))
    params.where = where
    values = dict(preset)
    for setting in extra:
        key, sep, text = setting.partition("=")
        if not sep:
            raise PipelineError(f"-S {setting}: expected KEY=VALUE")
        values[key.strip()] = yaml.safe_load(text)
    for dotted, value in values.items():
        *parents, last = dotted.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node[last] = value
    check_params_mapping(params)


def yaml_value(value) -> str:
    """``value`` as DVC's ``-S key=value`` parses it (YAML): ``null``, ``true``, ``[512]``, ``0.0003``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[: -len("\n...")].strip() if text.endswith("\n...") else text


def exp_run_command(preset: dict, name: str, *, queue: bool = False, extra: list[str] = ()) -> list[str]:
    """``dvc exp run -n NAME [--queue] -S key=value ...`` for ``preset`` (then the ``extra`` ``-S`` settings,
    which win)."""
    sets = [a for key, value in preset.items() for a in ("-S", f"{key}={yaml_value(value)}")]
    sets += [a for setting in extra for a in ("-S", setting)]
    return ["dvc", "exp", "run", "-n", name, *(["--queue"] if queue else []), *sets]
