"""Write every output to a temporary sibling path and rename it into place only when it is complete.

An interrupted stage (an exception, Ctrl-C, SIGTERM through :mod:`maivar.stage`) removes its temporary
path; a SIGKILLed one leaves a ``.NAME.tmp-PID`` sibling that the next run of the same output removes.
Either way the final path is absent or the previous complete version, never a half-written one.

A stage with several outputs writes them through :func:`atomic_outputs`: every output is complete in its
temporary before the first is renamed, so a failure (an exception, a signal) leaves the outputs of one run,
the previous one, never a mix of two. (Only the renames themselves come after the last check.)
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


@contextlib.contextmanager
def atomic_outputs(*finals: str | os.PathLike, directories: tuple = ()) -> Iterator[list[Path]]:
    """Yield a temporary path for each of ``finals`` (those in ``directories`` created as empty folders); when the
    block succeeds, rename them all into place (the last first); when it fails, remove every temporary and leave
    every final path as it was. Everything that can fail happens before the first rename."""
    dirs = {os.fspath(d) for d in directories}
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(f, directory=os.fspath(f) in dirs)) for f in finals]


def json_text(obj) -> str:
    """``obj`` as indented, key-sorted JSON with a final newline: stable bytes for DVC."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as :func:`json_text`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj))


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
