"""A run's files: the workspace's, or those of a git revision or DVC experiment (``maivar predict``, ``maivar report``).

:class:`RunFiles` reads a file of the workspace, or of a revision through :class:`dvc.api.DVCFileSystem` (git for
the files git tracks, the local DVC cache for the pipeline's outputs); :func:`read_paths` gives the output paths
the run's dvc.yaml names (``vars: paths``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from maivar.core.errors import PipelineError
from maivar.core.params import ParamsLoader

# Where the pipeline writes, when dvc.yaml (``vars: paths``) does not say otherwise.
DEFAULT_PATHS = {
    "images": "data/audio_images/images.h5", "previews": "data/audio_images/previews",
    "audio_features": "data/features/audio.h5", "video_features": "data/features/video.h5",
    "audio_mlp": "models/audio_mlp.pt", "video_mlp": "models/video_mlp.pt", "fusion_mlp": "models/fusion_mlp.pt",
    "audio_live": "dvclive/train_audio", "video_live": "dvclive/train_video", "fusion_live": "dvclive/train_fusion",
    "metrics": "metrics/metrics.json", "predictions": "metrics/predictions.csv",
}


class RunFiles:
    """A run's files: the workspace's, or a revision's through :class:`dvc.api.DVCFileSystem`.

    ``open`` reads a file; ``local`` gives a path on disk (for the workspace the file itself, for a revision
    a copy in a temporary folder, removed by ``close``)."""

    def __init__(self, root: str | Path = ".", rev: str | None = None):
        self.root = Path(root)
        self.rev = rev
        self.fs = None
        self._tmp: Path | None = None
        if rev is not None:
            self.fs = _open_fs(self.root, rev)

    def _rel(self, path: str) -> str:
        return Path(path).as_posix().lstrip("/")

    def exists(self, path: str) -> bool:
        if self.fs is None:
            return (self.root / path).exists()
        return bool(self.fs.exists(self._rel(path)))

    def open(self, path: str):
        if self.fs is None:
            return open(self.root / path, "rb")
        try:
            return self.fs.open(self._rel(path), mode="rb")
        except FileNotFoundError:
            raise PipelineError(f"{path} is not in revision {self.rev}") from None
        except Exception as exc:  # noqa: BLE001 - DVC raises several types for an output missing from the cache
            raise PipelineError(f"{path} of revision {self.rev} cannot be read ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}): is it in the local DVC "
                                "cache (dvc pull / dvc exp pull)?") from None

    def listdir(self, path: str) -> list[str]:
        """The names of the files in the folder ``path`` (sorted; empty when there is no such folder)."""
        if self.fs is None:
            folder = self.root / path
            return sorted(f.name for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []
        try:
            entries = self.fs.ls(self._rel(path), detail=True) if self.fs.isdir(self._rel(path)) else []
        except Exception:  # noqa: BLE001 - e.g. a DVC-tracked folder missing from the local cache: nothing to show
            return []
        return sorted(os.path.basename(str(e["name"]).rstrip("/")) for e in entries if e.get("type") == "file")

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as f:
            return f.read()

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when the run has no such file."""
        if not self.exists(path):
            return None
        with self.open(path) as f:
            return f.read().decode("utf8")

    def local(self, path: str, *, folder: bool = False) -> Path:
        """A path on disk holding the run's ``path`` (with ``folder``, the whole folder it is in is copied)."""
        if self.fs is None:
            return self.root / path
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="maivar-run-"))
        dest = self._tmp / self._rel(path)
        if dest.exists():
            return dest
        src = str(Path(self._rel(path)).parent) if folder else self._rel(path)
        if folder:
            self.fs.get(src, str(self._tmp / src), recursive=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self.open(path) as f, open(dest, "wb") as out:
                shutil.copyfileobj(f, out)
        return dest

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self.fs is not None:
            with contextlib.suppress(Exception):
                self.fs.close()


def _open_fs(root: Path, rev: str):
    """DVC's file system of ``root`` at ``rev`` (resolved first: a git revision, or an experiment's name)."""
    from dvc.api import DVCFileSystem
    from dvc.scm import SCM, resolve_rev

    try:
        scm = SCM(str(root))
        sha = resolve_rev(scm, rev)
        return DVCFileSystem(str(root), rev=sha)
    except Exception as exc:  # noqa: BLE001 - scmrepo/DVC raise several types for an unknown revision
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PipelineError(f"cannot read revision {rev!r} of {root}: {first} (give a git commit, branch or tag, or "
                            "an experiment name from `dvc exp show`)") from None


def read_paths(files: RunFiles) -> dict[str, str]:
    """The output paths of the run's dvc.yaml (``vars: paths``), over :data:`DEFAULT_PATHS`."""
    text = files.read_text("dvc.yaml")
    paths = dict(DEFAULT_PATHS)
    if text:
        doc = yaml.load(text, Loader=ParamsLoader) or {}
        for entry in doc.get("vars") or []:
            if isinstance(entry, dict) and isinstance(entry.get("paths"), dict):
                paths.update({k: str(v) for k, v in entry["paths"].items()})
    return paths
