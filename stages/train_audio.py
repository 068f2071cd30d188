"""Stage train_audio: the audio MLP on the audio-image features (paper Sec. III-C2, Table II "Audio")."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maivar.params import load_params  # noqa: E402
from maivar.stage import run_stage  # noqa: E402
from maivar.training import train_single_modality  # noqa: E402

MANIFEST = "data/prepared/manifest.csv"
FEATURES = "data/features/audio.h5"
MODEL = "models/audio_mlp.pt"
LIVE = "dvclive/train_audio"


def main() -> None:
    params = load_params()
    train_single_modality(modality="audio", manifest_path=MANIFEST, features_path=FEATURES, model_path=MODEL,
                          live_dir=LIVE, head=params["audio_mlp"], train=params["train"])


if __name__ == "__main__":
    run_stage(main)
