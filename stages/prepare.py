"""Stage prepare: ffmpeg audio demux and the audio-subset rule (see maivar/subset.py).

Writes data/prepared/manifest.csv, data/prepared/rejections.csv, data/prepared/audio/<id>.wav and
metrics/subset.json. Paths are relative to the working directory (the repository root under dvc).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maivar.atomic import atomic_path, write_json, write_text  # noqa: E402
from maivar.params import load_params, resolve_workers  # noqa: E402
from maivar.stage import run_stage  # noqa: E402
from maivar.subset import MANIFEST_COLUMNS, REJECTION_COLUMNS, check_subset, prepare_subset, to_csv  # noqa: E402

PREPARED = "data/prepared"
METRICS = "metrics/subset.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    args = parser.parse_args()
    params = load_params(args.params)
    dataset, p = params["dataset"], params["prepare"]
    audio_dir = f"{PREPARED}/audio"
    with atomic_path(audio_dir, directory=True) as wav_dir:
        subset = prepare_subset(
            dataset["root"], split=int(dataset["split"]), classes=p["classes"], wav_dir=wav_dir, audio_dir=audio_dir,
            sample_rate=int(p["sample_rate"]), channels=int(p["channels"]), silence_dbfs=float(p["silence_dbfs"]),
            min_class_audio_share=float(p["min_class_audio_share"]),
            min_decoded_share=float(p["min_decoded_share"]), timeout_s=float(p["timeout_s"]),
            frame_check=p["frame_check"], workers=resolve_workers(p["workers"]),
        )
        check_subset(subset, float(p["max_rejected_share"]))
        write_text(f"{PREPARED}/manifest.csv", to_csv(subset.manifest, MANIFEST_COLUMNS))
        write_text(f"{PREPARED}/rejections.csv", to_csv(subset.rejections, REJECTION_COLUMNS))
        write_json(METRICS, subset.metrics)


if __name__ == "__main__":
    run_stage(main)
