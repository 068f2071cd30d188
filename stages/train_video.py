"""Stage train_video: the video MLP on the TSN segment features (paper Sec. III-C1, "video-only")."""

from maivar.core.params import load_params
from maivar.core.stage import run_stage, stage_args
from maivar.heads.training import train_single_modality


def main() -> None:
    args = stage_args(__doc__, "manifest", "features", "model", "live")
    params = load_params(args.params)
    train_single_modality(modality="video", manifest_path=args.manifest, features_path=args.features,
                          model_path=args.model, live_dir=args.live, head=params["video_mlp"], train=params["train"])


if __name__ == "__main__":
    run_stage(main)
