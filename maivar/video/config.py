"""An MMAction2 config file, read with mmengine's ``Config`` (which imports neither torch nor MMAction2): what the
video backbone is built from (:mod:`maivar.video.tsn`) and what stage weights_video fingerprints
(:func:`video_weights_request`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from maivar.core.errors import PipelineError
from maivar.extraction.weights import WeightsRequest

if TYPE_CHECKING:
    from maivar.settings.extract import ExtractVideoSettings


def load_mmaction_config(config_path: str | Path):
    from mmengine.config import Config

    path = Path(config_path)
    if not path.is_file():
        raise PipelineError(f"MMAction2 config {path} does not exist: fix extract_video.config in params.yaml")
    try:
        return Config.fromfile(str(path))
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"MMAction2 config {path} cannot be read: {str(exc).splitlines()[0][:200]}") from None


def video_weights_request(settings: ExtractVideoSettings) -> WeightsRequest:
    """What ``extract_video`` asks of the weights (stage weights_video's parameters): the architecture is the
    config's ``model`` section (its sha256, ``_base_`` files resolved), not the file's other settings."""
    model_cfg = load_mmaction_config(settings.config).get("model")
    text = json.dumps(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg, sort_keys=True,
                      default=str)
    checkpoint = settings.checkpoint or None
    return WeightsRequest("video", settings.config, hashlib.sha256(text.encode()).hexdigest(), False, checkpoint,
                          None if checkpoint else settings.seed)
