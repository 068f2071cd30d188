"""Stage train_fusion: the fusion MLP on [audio, video], initialised from the video MLP (paper Algorithm 1)."""

from maivar.core.params import load_params
from maivar.core.stage import run_stage, stage_args
from maivar.heads.training import train_fusion


def main() -> None:
    args = stage_args(__doc__, "manifest", "audio", "video", "video-model", "model", "live")
    params = load_params(args.params)
    train_fusion(manifest_path=args.manifest, audio_path=args.audio, video_path=args.video,
                 video_model_path=args.video_model, model_path=args.model, live_dir=args.live,
                 head=params["fusion_mlp"], video_head=params["video_mlp"], train=params["train"])


if __name__ == "__main__":
    run_stage(main)
