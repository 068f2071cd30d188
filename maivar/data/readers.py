"""Datasets in any of three formats, behind one interface: :data:`READERS`, one reader per ``dataset.format``.

Every reader has one signature, ``read_listing(root: Path, settings: DatasetSettings) -> Listing``: ``root`` is
``dataset.root`` (an existing folder), ``settings`` the whole ``dataset`` section, already checked
(:class:`~maivar.settings.data.DatasetSettings`); it reads the keys its format needs and returns a
:class:`~maivar.data.listing.Listing` (the types, clip ids and class presets are in :mod:`maivar.data.listing`).

- ``ucf101`` (:mod:`maivar.data.ucf101`): ``UCF-101/<Class>/<file>.<ext>`` and ``ucfTrainTestlist/``
  (classInd.txt and the split ``dataset.split``); any container PyAV can open.
- ``csv`` (:mod:`maivar.data.csv_annotations`): one CSV (``dataset.annotations``) with columns
  ``path,label,split`` and optionally ``start_s,end_s`` (a clip taken out of a longer video).
- ``kinetics`` (:mod:`maivar.data.kinetics`): Kinetics' annotation CSVs (``label,youtube_id,time_start,
  time_end,split``) and the videos the common downloaders write.

**A new format** is one file and one entry here: a module ``maivar/data/<format>.py`` that imports
:mod:`maivar.data.listing` (never this module) and defines ``read_listing(root, settings)``, and its line in
:data:`READERS`. ``dataset.format`` accepts exactly this table's keys (its settings check reads them), stage
prepare and everything after it read the listing through :func:`read_listing`, and ``maivar check-deps`` sees
the new module through the import here (``maivar/data`` is already a dep of the stages that load it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from maivar.core.errors import PipelineError

from . import csv_annotations, kinetics, ucf101
from .listing import Listing, contain

if TYPE_CHECKING:
    from maivar.settings.data import DatasetSettings

Reader = Callable[[Path, "DatasetSettings"], Listing]

READERS: dict[str, Reader] = {
    "ucf101": ucf101.read_listing,
    "csv": csv_annotations.read_listing,
    "kinetics": kinetics.read_listing,
}


def read_listing(settings: DatasetSettings) -> Listing:
    """The clips of the dataset ``settings`` describes, read by its format's reader, under the one containment
    rule (:func:`~maivar.data.listing.contain`: a file outside ``dataset.root``, links resolved, is refused as
    ``outside_root``; paths stay local files; ids are bounded)."""
    root = Path(settings.root)
    if not root.is_dir():
        raise PipelineError(f"dataset root {root} does not exist: set dataset.root in params.yaml to your dataset's "
                            "folder, or run the synthesize stage")
    return contain(READERS[settings.format](root, settings), root)
