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
STAGE_RUNS = [0]  # stages this test process has run (conftest's sentinel check looks after each test that ran one)


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


# Stages that always run before these, as `dvc repro STAGE` runs an always-changed stage upstream of STAGE: prepare
# depends on the listing of the dataset, the extract stages read their weights from the weights stages' files
# (rewritten only when the dataset's files or params.yaml change, so most runs only check them).
ALWAYS_BEFORE = {"prepare": "listing", "extract_audio": "weights_audio", "extract_video": "weights_video"}


def _upstream(stage: str, cwd: Path) -> tuple[int, str]:
    """Run the always-changed stage upstream of ``stage`` (:data:`ALWAYS_BEFORE`) in this process: (exit status,
    what it printed to stderr)."""
    import contextlib
    import io

    if stage not in ALWAYS_BEFORE:
        return 0, ""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = _in_process(ALWAYS_BEFORE[stage], cwd)
    sys.stderr.write(err.getvalue())
    return code, err.getvalue()


def run_stage(stage: str, cwd: Path, *, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the stage in ``cwd`` (capturing text output, no stdin), after the always-changed stage upstream of it
    (:data:`ALWAYS_BEFORE`, in this process; when that fails, its exit status and stderr are the result)."""
    code, err = _upstream(stage, cwd)
    if code:
        return subprocess.CompletedProcess(stage_argv(ALWAYS_BEFORE[stage]), code, "", err)
    STAGE_RUNS[0] += 1
    return subprocess.run(stage_argv(stage), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)


def run_stage_in_process(stage: str, cwd: Path, *, upstream: bool = True) -> int:
    """Run the stage's script as ``__main__`` in this process, in ``cwd``, with its dvc.yaml command line, after
    the always-changed stage upstream of it (:data:`ALWAYS_BEFORE`, unless ``upstream`` is false; when that fails,
    its exit status is the result); return its exit status (0 when it returns). What it prints goes to this
    process's stdout/stderr (``capsys``), its log records to the root logger (``caplog``)."""
    code, _ = _upstream(stage, cwd) if upstream else (0, "")
    return code or _in_process(stage, cwd)


def _in_process(stage: str, cwd: Path) -> int:
    argv = stage_argv(stage)
    STAGE_RUNS[0] += 1
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


def scratch_repository(dest: Path, extra: dict[str, str] | None = None) -> tuple[Path, dict]:
    """A git repository at ``dest`` holding this checkout's files as they are now (tracked and untracked, not
    ignored) and the ``extra`` files (relative path -> text), committed; and the environment to run ``dvc`` and
    the stages in it (this interpreter's bin first). For tests of DVC-level commands (``dvc exp run``) that must
    not touch the checkout itself."""
    import shutil

    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, names):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    for name, text in (extra or {}).items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(text)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest, env
