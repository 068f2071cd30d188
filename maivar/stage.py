"""Run a stage's ``main``: logging set up, SIGTERM turned into a clean exit, errors as one line.

Every script in ``stages/`` ends with ``run_stage(main)``. A :class:`~maivar.errors.PipelineError`
prints ``error: <message>`` and exits 1 (no traceback); SIGTERM raises ``SystemExit(143)`` so that the
``finally``/``except`` blocks of :func:`maivar.atomic.atomic_path` remove temporaries on the way out.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Callable

from .errors import PipelineError

log = logging.getLogger("maivar")


def _on_sigterm(signum, frame):  # noqa: ARG001
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
