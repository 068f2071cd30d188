"""Stage train_fusion: the fusion MLP on [audio, video], initialized from the video MLP (paper Algorithm 1)."""

from maivar.core.stage import run_stage, stage_args
from maivar.heads.training import train_fusion
from maivar.settings.base import read_params
from maivar.settings.heads import FusionSettings, TrainSettings, VideoHeadSettings
from maivar.settings.runtime import RuntimeSettings


def main() -> None:
    args = stage_args(__doc__, "manifest", "audio", "video", "video-model", "model", "live")
    params = read_params(args.params)
    memory_mb = RuntimeSettings.from_params(params).heads.memory_mb
    head, video_head = FusionSettings.from_params(params), VideoHeadSettings.from_params(params)
    train = TrainSettings.from_params(params)
    train_fusion(manifest_path=args.manifest, audio_path=args.audio, video_path=args.video,
                 video_model_path=args.video_model, model_path=args.model, live_dir=args.live,
                 head=head, video_head=video_head, train=train, memory_mb=memory_mb)


if __name__ == "__main__":
    run_stage(main)
