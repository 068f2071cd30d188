"""Stage train_video: the video MLP on the TSN segment features (paper Sec. III-C1, "video-only")."""

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
FEATURES = "data/features/video.h5"
MODEL = "models/video_mlp.pt"
LIVE = "dvclive/train_video"


def main() -> None:
    params = load_params()
    train, head = params["train"], params["video_mlp"]
    set_determinism(train["seed"], train["threads"])
    manifest = read_manifest(MANIFEST)
    classes = class_names(manifest)
    video = load_features(FEATURES, manifest, "video", segments=head["segments"])
    model = MLP(video.x.shape[1], head["hidden"], len(classes), head["dropout"])
    history = fit(video, manifest, model, epochs=head["epochs"], lr=head["lr"], batch_size=head["batch_size"],
                  l1=train["l1"], seed=train["seed"], live_dir=LIVE)
    save_model(MODEL, model, classes=classes, extra={
        "modality": "video", "segments": head["segments"], "excluded": rejection_records(video.excluded),
        "history": history, "features_attrs": {k: str(v) for k, v in video.attrs.items()},
    })


if __name__ == "__main__":
    run_stage(main)
