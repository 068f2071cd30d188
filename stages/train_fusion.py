"""Stage train_fusion: the fusion MLP on [audio, video], initialised from the video MLP (paper Algorithm 1)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maivar.heads import check_video_fits, fusion_from_video  # noqa: E402
from maivar.params import load_params  # noqa: E402
from maivar.stage import run_stage  # noqa: E402
from maivar.training import (  # noqa: E402
    class_names, fit, join_modalities, load_features, load_model, read_manifest, rejection_records, save_model,
    set_determinism,
)

MANIFEST = "data/prepared/manifest.csv"
AUDIO = "data/features/audio.h5"
VIDEO = "data/features/video.h5"
VIDEO_MODEL = "models/video_mlp.pt"
MODEL = "models/fusion_mlp.pt"
LIVE = "dvclive/train_fusion"


def main() -> None:
    params = load_params()
    train, head, video_head = params["train"], params["fusion_mlp"], params["video_mlp"]
    set_determinism(train["seed"], train["threads"])
    manifest = read_manifest(MANIFEST)
    classes = class_names(manifest)
    audio = load_features(AUDIO, manifest, "audio")
    video = load_features(VIDEO, manifest, "video", segments=video_head["segments"])
    fused, _ = join_modalities(audio, video)
    video_mlp, _ = load_model(VIDEO_MODEL)
    check_video_fits(video_mlp.config, video.x.shape[1], len(classes))
    model = fusion_from_video(video_mlp, audio.x.shape[1], init=head["init"])
    # Algorithm 1 keeps the video MLP's normalisation for the video columns; fit only the audio columns.
    normalise = slice(0, audio.x.shape[1]) if head["init"] == "video" else slice(None)
    history = fit(fused, manifest, model, epochs=head["epochs"], lr=head["lr"], batch_size=head["batch_size"],
                  l1=train["l1"], seed=train["seed"], live_dir=LIVE, normalise=normalise)
    save_model(MODEL, model, classes=classes, extra={
        "modality": "fusion", "init": head["init"], "audio_features": int(audio.x.shape[1]),
        "segments": video_head["segments"], "excluded": rejection_records(fused.excluded), "history": history,
    })


if __name__ == "__main__":
    run_stage(main)
