"""Stage evaluate: test-set metrics of the audio, video and fusion MLPs (paper Table II keys).

All three heads are scored on the same test clips: those with finite audio and video features (the
fusion model's test set), so that the three accuracies are comparable. Writes ``metrics/metrics.json``
(``audio.top1``, ``video.top1``, ``fusion.top1``, ``*.top5``, ``*.mean_class_acc`` in percent,
``test_clips``, ``excluded_test_clips``, ``pretrained.audio``, ``pretrained.video``, ``representation``),
``metrics/per_class.csv`` and ``metrics/confusion.csv`` (fusion model; columns ``actual``, ``predicted``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maivar.atomic import write_json, write_text  # noqa: E402
from maivar.errors import PipelineError  # noqa: E402
from maivar.evaluation import confusion_csv, head_metrics, per_class_csv, predictions  # noqa: E402
from maivar.params import load_params  # noqa: E402
from maivar.stage import run_stage  # noqa: E402
from maivar.training import (  # noqa: E402
    class_names, join_modalities, load_features, load_model, predict, read_manifest, set_determinism, split_rows,
)

MANIFEST = "data/prepared/manifest.csv"
AUDIO = "data/features/audio.h5"
VIDEO = "data/features/video.h5"
MODELS = {h: f"models/{h}_mlp.pt" for h in ("audio", "video", "fusion")}
METRICS = "metrics/metrics.json"
PER_CLASS = "metrics/per_class.csv"
CONFUSION = "metrics/confusion.csv"

log = logging.getLogger("maivar.evaluate")


def _flag(value) -> bool | None:
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.lower())
    return None if value is None else bool(value)


def main() -> None:
    params = load_params()
    set_determinism(params["train"]["seed"], params["train"]["threads"])
    manifest = read_manifest(MANIFEST)
    classes = class_names(manifest)
    models = {h: load_model(p) for h, p in MODELS.items()}
    segments = models["video"][1].get("segments", "mean")
    audio = load_features(AUDIO, manifest, "audio")
    video = load_features(VIDEO, manifest, "video", segments=segments)
    fused, _ = join_modalities(audio, video)
    test = split_rows(fused, manifest, "test")
    if len(test) == 0:
        raise PipelineError("no test clip has both audio and video features: check the manifest's split column")
    n_audio = audio.x.shape[1]
    inputs = {"audio": fused.x[test, :n_audio], "video": fused.x[test, n_audio:], "fusion": fused.x[test]}
    y = fused.y[test]
    logits = {}
    for head, (model, _) in models.items():
        if model.config["in_features"] != inputs[head].shape[1] or model.config["num_classes"] != len(classes):
            raise PipelineError(f"{MODELS[head]} does not fit the current features or classes: rerun dvc repro")
        logits[head] = predict(model, inputs[head])
    test_ids = [fused.ids[i] for i in test]
    excluded_test = sorted(i for i, s in manifest["split"].items() if s == "test" and i not in set(test_ids))
    if excluded_test:
        log.warning("%d test clip(s) without both modalities are not scored: %s", len(excluded_test),
                    ", ".join(excluded_test[:5]) + (" ..." if len(excluded_test) > 5 else ""))
    metrics = {h: head_metrics(lg, y, len(classes)) for h, lg in logits.items()}
    metrics.update({
        "test_clips": len(test_ids),
        "excluded_test_clips": len(excluded_test),
        "pretrained": {"audio": _flag(audio.attrs.get("pretrained")), "video": _flag(video.attrs.get("pretrained"))},
        "representation": audio.attrs.get("representation"),
    })
    write_json(METRICS, metrics)
    write_text(PER_CLASS, per_class_csv(y, logits, classes))
    write_text(CONFUSION, confusion_csv(test_ids, y, predictions(logits["fusion"]), classes))
    log.info("top-1 on %d test clips: audio %s%%, video %s%%, fusion %s%%", len(test_ids),
             metrics["audio"]["top1"], metrics["video"]["top1"], metrics["fusion"]["top1"])


if __name__ == "__main__":
    run_stage(main)
