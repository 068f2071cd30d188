"""Stage train_audio: the audio MLP on the audio-image features (paper Sec. III-C2, Table II "Audio")."""

from maivar.core.stage import run_stage, stage_args
from maivar.heads.training import train_single_modality
from maivar.settings.base import read_params
from maivar.settings.heads import HeadSettings, TrainSettings
from maivar.settings.runtime import RuntimeSettings


def main() -> None:
    args = stage_args(__doc__, "manifest", "features", "model", "live")
    params = read_params(args.params)
    memory_mb = RuntimeSettings.from_params(params).heads.memory_mb
    head, train = HeadSettings.from_params(params, "audio_mlp"), TrainSettings.from_params(params)
    train_single_modality(modality="audio", manifest_path=args.manifest, features_path=args.features,
                          model_path=args.model, live_dir=args.live, head=head, train=train, memory_mb=memory_mb)


if __name__ == "__main__":
    run_stage(main)
