"""Run a stage's ``main``: its paths from the command line, logging set up, SIGTERM turned into a clean
exit, errors as one line.

A stage's paths are named once, in dvc.yaml, and reach its script as ``--NAME PATH`` options
(:func:`stage_args`). Every script in ``stages/`` ends with ``run_stage(main)``. A
:class:`~maivar.core.errors.PipelineError` prints ``error: <message>`` and exits 1 (no traceback); SIGTERM
raises ``SystemExit(143)`` so that the ``finally``/``except`` blocks of :func:`maivar.core.atomic.atomic_path`
remove temporaries on the way out.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable

from .errors import PipelineError


def stage_args(description: str, *paths: str) -> argparse.Namespace:
    """Parse a stage's command line: one required ``--NAME PATH`` per name in ``paths`` (``-`` in a name
    becomes ``_`` in the result), and ``--params FILE`` (default ``params.yaml``, DVC's parameters file)."""
    parser = argparse.ArgumentParser(description=description.strip().splitlines()[0] if description else None)
    for name in paths:
        parser.add_argument(f"--{name}", required=True, metavar="PATH")
    parser.add_argument("--params", default="params.yaml", metavar="FILE", help="parameters (default: params.yaml)")
    return parser.parse_args()


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def run_stage(main: Callable[[], None]) -> None:
    setup_logging()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
