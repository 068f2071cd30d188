"""Stage prepare: ffmpeg audio demux and the audio-subset rule (maivar.data.subset).

Writes the manifest of kept clips, the rejection list, one WAV per kept clip and the subset's metrics.
"""

from maivar.core.atomic import atomic_outputs, json_text
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
    # the four outputs are renamed into place together, after everything that can fail (no mix of two runs)
    with atomic_outputs(args.audio, args.manifest, args.rejections, args.metrics,
                        directories=(args.audio,)) as (wav_dir, manifest, rejections, metrics):
        subset = prepare_subset(dataset=dataset, prepare=prepare, wav_dir=wav_dir, audio_dir=args.audio,
                                workers=runtime.worker_count)
        check_subset(subset, prepare.max_rejected_share)
        manifest.write_text(to_csv(subset.manifest, MANIFEST_COLUMNS))
        rejections.write_text(to_csv(subset.rejections, REJECTION_COLUMNS))
        metrics.write_text(json_text(subset.metrics))


if __name__ == "__main__":
    run_stage(main)
