"""Stage train_video: the video MLP on the TSN segment features (paper Sec. III-C1, "video-only")."""

from maivar.core.stage import run_stage, stage_args
from maivar.heads.training import train_single_modality
from maivar.settings.base import read_params
from maivar.settings.heads import TrainSettings, VideoHeadSettings
from maivar.settings.runtime import RuntimeSettings


def main() -> None:
    args = stage_args(__doc__, "manifest", "features", "model", "live")
    params = read_params(args.params)
    memory_mb = RuntimeSettings.from_params(params).heads.memory_mb
    head, train = VideoHeadSettings.from_params(params), TrainSettings.from_params(params)
    train_single_modality(modality="video", manifest_path=args.manifest, features_path=args.features,
                          model_path=args.model, live_dir=args.live, head=head, train=train, memory_mb=memory_mb)


if __name__ == "__main__":
    run_stage(main)
