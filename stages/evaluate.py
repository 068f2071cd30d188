"""Stage evaluate: test-set metrics of the audio, video and fusion MLPs (paper Table II keys).

Writes the metrics (top-1, top-5, mean class accuracy per head), the per-class accuracy table, the
fusion model's confusion rows and every test clip's prediction by each head (maivar.evaluation).
"""

from maivar.core.stage import run_stage, stage_args
from maivar.evaluation import evaluate_heads
from maivar.settings.base import read_params
from maivar.settings.heads import TrainSettings
from maivar.settings.runtime import RuntimeSettings


def main() -> None:
    args = stage_args(__doc__, "manifest", "audio", "video", "audio-model", "video-model", "fusion-model",
                      "metrics", "per-class", "confusion", "predictions")
    params = read_params(args.params)
    memory_mb = RuntimeSettings.from_params(params).heads.memory_mb
    train = TrainSettings.from_params(params)
    evaluate_heads(manifest_path=args.manifest, audio_path=args.audio, video_path=args.video,
                   model_paths={"audio": args.audio_model, "video": args.video_model, "fusion": args.fusion_model},
                   metrics_path=args.metrics, per_class_path=args.per_class, confusion_path=args.confusion,
                   predictions_path=args.predictions, seed=train.seed, threads=train.threads,
                   memory_mb=memory_mb)


if __name__ == "__main__":
    run_stage(main)
