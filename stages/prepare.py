"""Stage prepare: ffmpeg audio demux and the audio-subset rule (maivar.data.subset).

Writes the manifest of kept clips, the rejection list, one WAV per kept clip and the subset's metrics.
"""

from maivar.core.atomic import atomic_path, write_json, write_text
from maivar.core.params import load_params, resolve_workers, runtime_settings
from maivar.core.stage import run_stage, stage_args
from maivar.data.subset import MANIFEST_COLUMNS, REJECTION_COLUMNS, check_subset, prepare_subset, to_csv
from maivar.settings.data import DatasetSettings


def main() -> None:
    args = stage_args(__doc__, "manifest", "rejections", "audio", "metrics")
    params = load_params(args.params)
    dataset, p = DatasetSettings.from_params(params), params["prepare"]
    with atomic_path(args.audio, directory=True) as wav_dir:
        subset = prepare_subset(
            dataset, classes=p["classes"], wav_dir=wav_dir, audio_dir=args.audio,
            sample_rate=int(p["sample_rate"]), channels=int(p["channels"]), silence_dbfs=float(p["silence_dbfs"]),
            min_class_audio_share=float(p["min_class_audio_share"]),
            min_decoded_share=float(p["min_decoded_share"]), min_audio_coverage=float(p["min_audio_coverage"]),
            timeout_s=float(p["timeout_s"]),
            frame_check=p["frame_check"], workers=resolve_workers(runtime_settings(params, "prepare")["workers"]),
        )
        check_subset(subset, float(p["max_rejected_share"]))
        write_text(args.manifest, to_csv(subset.manifest, MANIFEST_COLUMNS))
        write_text(args.rejections, to_csv(subset.rejections, REJECTION_COLUMNS))
        write_json(args.metrics, subset.metrics)


if __name__ == "__main__":
    run_stage(main)
