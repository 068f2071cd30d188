"""DVC as a command, through the running interpreter: ``python -m dvc``, never ``dvc`` looked up on ``PATH``.

A virtual environment used without being activated (``.venv/bin/python scripts/table2.py``) has no ``dvc`` on
``PATH``; its interpreter has DVC all the same. Where the interpreter lacks DVC, the caller gets one line saying
so (a :class:`~maivar.core.errors.PipelineError`), not a ``FileNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib.util
import sys

from .errors import PipelineError


def dvc_argv(*args: str) -> list[str]:
    """``[sys.executable, "-m", "dvc", *args]``, or a one-line :class:`PipelineError` when this interpreter has no
    DVC."""
    if importlib.util.find_spec("dvc") is None:
        raise PipelineError(f"DVC is not installed for {sys.executable}: install it there (pip install dvc), or run "
                            "this with the Python of the environment that has it")
    return [sys.executable, "-m", "dvc", *args]
