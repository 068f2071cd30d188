"""Stage train_video: the video MLP on the TSN segment features (paper Sec. III-C1, "video-only")."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maivar.params import load_params  # noqa: E402
from maivar.stage import run_stage  # noqa: E402
from maivar.training import train_single_modality  # noqa: E402

MANIFEST = "data/prepared/manifest.csv"
FEATURES = "data/features/video.h5"
MODEL = "models/video_mlp.pt"
LIVE = "dvclive/train_video"


def main() -> None:
    params = load_params()
    train_single_modality(modality="video", manifest_path=MANIFEST, features_path=FEATURES, model_path=MODEL,
                          live_dir=LIVE, head=params["video_mlp"], train=params["train"])


if __name__ == "__main__":
    run_stage(main)
