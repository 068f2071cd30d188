"""Read ``data/prepared/manifest.csv`` (written by stage ``prepare``; columns in docs/CONTRACTS.md).

Every stage that reads the manifest goes through :func:`read_manifest`, so a missing, unreadable or
malformed manifest is the same one-line :class:`~maivar.errors.PipelineError` everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from .errors import PipelineError

STRING_COLUMNS = ("id", "class_name", "split", "video_path", "audio_path")


def read_manifest(path: str | Path, required: Iterable[str]) -> pd.DataFrame:
    """The manifest sorted by ``id``; it must exist, parse, hold the ``required`` columns and unique ids."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: run the prepare stage first (dvc repro prepare)")
    try:
        df = pd.read_csv(path, dtype={c: str for c in STRING_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path} is not a readable CSV ({str(exc).splitlines()[0]}): rerun the prepare stage")
    missing = sorted(set(required) - set(df.columns))
    if missing:
        raise PipelineError(f"{path} lacks column(s) {', '.join(missing)}: rerun the prepare stage")
    if df["id"].duplicated().any():
        raise PipelineError(f"{path} has duplicate ids (e.g. {df['id'][df['id'].duplicated()].iloc[0]!r})")
    return df.sort_values("id", kind="stable").reset_index(drop=True)
