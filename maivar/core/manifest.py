"""Read ``data/prepared/manifest.csv`` (written by stage ``prepare``; columns in docs/CONTRACTS.md).

Every stage that reads the manifest goes through :func:`read_manifest`, so a missing, unreadable, empty or
malformed manifest is the same one-line :class:`~maivar.core.errors.PipelineError` everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PipelineError

if TYPE_CHECKING:
    import pandas as pd

# The manifest's columns, in the order stage prepare writes them (docs/CONTRACTS.md says what each holds).
MANIFEST_COLUMNS = ("id", "class_name", "label", "split", "video_path", "audio_path", "start_s", "end_s",
                    "duration_s", "fps", "frames", "width", "height", "audio_sample_rate", "audio_channels",
                    "audio_peak_dbfs", "audio_rms_dbfs", "audio_coverage", "decoded_share")
STRING_COLUMNS = ("id", "class_name", "split", "video_path", "audio_path")
SPLITS = ("train", "test")  # the split names, everywhere (manifest, listings, rejections)


def read_manifest(path: str | Path, required: Iterable[str], *, only: bool = False) -> pd.DataFrame:
    """The manifest sorted by ``id`` and indexed by it (the column stays too).

    It must exist, parse, list at least one clip, hold the ``required`` columns and unique ids; a ``split``
    column may only say ``train`` or ``test``. With ``only``, just the ``required`` columns (and ``id``, ``split``)
    are read: the heads keep ~0.3 KB a clip instead of ~2 KB for all 19 columns (paths, probe figures).
    """
    import pandas as pd  # here, not above: the readers and settings import this module's names without pandas

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: run the prepare stage first (dvc repro prepare)")
    try:
        wanted = {*required, "id", "split"}
        usecols = (lambda c: c in wanted) if only else None
        df = pd.read_csv(path, dtype={c: str for c in STRING_COLUMNS}, usecols=usecols)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise PipelineError(f"{path} is not a readable CSV ({first}): rerun the prepare stage") from None
    missing = sorted(set(required) - set(df.columns))
    if missing:
        raise PipelineError(f"{path} lacks column(s) {', '.join(missing)}: rerun the prepare stage")
    if df.empty:
        raise PipelineError(f"{path} lists no clips: rerun the prepare stage")
    if df["id"].duplicated().any():
        raise PipelineError(f"{path} has duplicate ids (e.g. {df['id'][df['id'].duplicated()].iloc[0]!r})")
    if "split" in df.columns:
        bad = sorted(set(df["split"]) - set(SPLITS))
        if bad:
            raise PipelineError(f"{path}: split must be train or test, found {bad[0]!r}")
    return df.sort_values("id", kind="stable").set_index("id", drop=False)
