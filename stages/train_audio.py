"""Stage train_audio: the audio MLP on the audio-image features (paper Sec. III-C2, Table II "Audio")."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maivar.heads import MLP  # noqa: E402
from maivar.params import load_params  # noqa: E402
from maivar.stage import run_stage  # noqa: E402
from maivar.training import (  # noqa: E402
    class_names, fit, load_features, read_manifest, rejection_records, save_model, set_determinism,
)

MANIFEST = "data/prepared/manifest.csv"
FEATURES = "data/features/audio.h5"
MODEL = "models/audio_mlp.pt"
LIVE = "dvclive/train_audio"


def main() -> None:
    params = load_params()
    train, head = params["train"], params["audio_mlp"]
    set_determinism(train["seed"], train["threads"])
    manifest = read_manifest(MANIFEST)
    classes = class_names(manifest)
    audio = load_features(FEATURES, manifest, "audio")
    model = MLP(audio.x.shape[1], head["hidden"], len(classes), head["dropout"])
    history = fit(audio, manifest, model, epochs=head["epochs"], lr=head["lr"], batch_size=head["batch_size"],
                  l1=train["l1"], seed=train["seed"], live_dir=LIVE)
    save_model(MODEL, model, classes=classes, extra={
        "modality": "audio", "excluded": rejection_records(audio.excluded), "history": history,
        "features_attrs": {k: str(v) for k, v in audio.attrs.items()},
    })


if __name__ == "__main__":
    run_stage(main)
