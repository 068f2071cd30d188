"""Stage prepare: ffmpeg audio demux and the audio-subset rule (maivar.data.subset).

Writes the manifest of kept clips, the rejection list, one WAV per kept clip and the subset's metrics.
"""

from maivar.core.atomic import atomic_path, write_json, write_text
from maivar.core.manifest import MANIFEST_COLUMNS
from maivar.core.stage import run_stage, stage_args
from maivar.data.subset import REJECTION_COLUMNS, check_subset, prepare_subset, to_csv
from maivar.settings.base import read_params
from maivar.settings.data import DatasetSettings, PrepareSettings
from maivar.settings.runtime import RuntimeSettings


def main() -> None:
    args = stage_args(__doc__, "manifest", "rejections", "audio", "metrics")
    params = read_params(args.params)
    dataset = DatasetSettings.from_params(params)
    prepare = PrepareSettings.from_params(params)
    runtime = RuntimeSettings.from_params(params)
    with atomic_path(args.audio, directory=True) as wav_dir:
        subset = prepare_subset(dataset=dataset, prepare=prepare, wav_dir=wav_dir, audio_dir=args.audio,
                                workers=runtime.worker_count)
        check_subset(subset, prepare.max_rejected_share)
        write_text(args.manifest, to_csv(subset.manifest, MANIFEST_COLUMNS))
        write_text(args.rejections, to_csv(subset.rejections, REJECTION_COLUMNS))
        write_json(args.metrics, subset.metrics)


if __name__ == "__main__":
    run_stage(main)
