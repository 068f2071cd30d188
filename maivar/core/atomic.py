"""Write every output to a temporary sibling path and rename it into place only when it is complete.

An interrupted stage (an exception, Ctrl-C, SIGTERM through :mod:`maivar.stage`) removes its temporary
path; a SIGKILLed one leaves a ``.NAME.tmp-PID`` sibling that the next run of the same output removes.
Either way the final path is absent or the previous complete version, never a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"


def _tmp_sibling(final: Path) -> Path:
    return final.parent / f".{final.name}{TMP_MARK}{os.getpid()}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove temporaries that killed runs left beside ``final``; returns what was removed."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    stale = sorted(final.parent.glob(f".{final.name}{TMP_MARK}*"))
    for path in stale:
        _remove(path)
    return stale


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``final`` to; rename it into place when the block succeeds.

    With ``directory=True`` the temporary path is created as an empty directory. The previous version of
    ``final`` (file or directory) stays in place until the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = _tmp_sibling(final)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path for {final}")
        _fsync(tmp)
        if final.is_dir() and not final.is_symlink():
            # os.replace cannot overwrite a non-empty directory: move the old one aside first.
            old = final.parent / f".{final.name}{TMP_MARK}old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _fsync(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON (stable bytes for DVC), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
