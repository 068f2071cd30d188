"""Run a stage exactly as ``dvc repro`` runs it: its command from dvc.yaml (paths interpolated), in a
scratch directory that plays the repository root (it holds its own ``params.yaml`` and ``data/``).

:func:`run_stage` starts a process, as DVC does: for what only a process shows (exit codes, stderr, signals).
:func:`run_stage_in_process` runs the same entry point with the same command line in the test's own process,
where torch, timm and MMAction2 are already imported: the same code path, seconds cheaper per run.
"""

from __future__ import annotations

import os
import runpy
import shlex
import signal
import subprocess
import sys
from functools import cache
from pathlib import Path

from maivar.stage_deps import read_stages

REPO = Path(__file__).resolve().parents[1]


@cache
def _commands() -> dict[str, tuple[str, ...]]:
    return {name: tuple(shlex.split(stage.cmd)) for name, stage in read_stages(REPO).items()}


def stage_argv(stage: str, *, script: str | Path | None = None) -> list[str]:
    """``[python, <repo>/stages/<stage>.py, --manifest, data/prepared/manifest.csv, ...]``: the stage's
    command from dvc.yaml, with this interpreter and the script's absolute path (or ``script`` instead, e.g. a
    wrapper that injects a fault and then runs the stage)."""
    words = list(_commands()[stage])
    entry = next(i for i, w in enumerate(words) if w.startswith("stages/") and w.endswith(".py"))
    assert words[:entry] == ["python"], words
    return [sys.executable, str(script or REPO / words[entry]), *words[entry + 1:]]


def stage_path(stage: str, option: str) -> str:
    """The path the stage's command gives for ``--option`` (e.g. ``stage_path("render", "images")``)."""
    words = _commands()[stage]
    return words[words.index(f"--{option}") + 1]


def run_stage(stage: str, cwd: Path, *, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the stage in ``cwd`` (capturing text output, no stdin)."""
    return subprocess.run(stage_argv(stage), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)


def run_stage_in_process(stage: str, cwd: Path) -> int:
    """Run the stage's script as ``__main__`` in this process, in ``cwd``, with its dvc.yaml command line; return
    its exit status (0 when it returns). What it prints goes to this process's stdout/stderr (``capsys``), its
    log records to the root logger (``caplog``)."""
    argv = stage_argv(stage)
    saved = os.getcwd(), sys.argv, signal.getsignal(signal.SIGTERM)
    os.chdir(cwd)
    sys.argv = argv[1:]
    try:
        runpy.run_path(argv[1], run_name="__main__")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        os.chdir(saved[0])
        sys.argv = saved[1]
        signal.signal(signal.SIGTERM, saved[2])  # run_stage turns SIGTERM into an exit: not for pytest
