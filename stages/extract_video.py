"""Stage extract_video: manifest videos -> per-segment features of a frozen TSN (MMAction2)."""

from maivar.core.params import load_params, runtime_settings
from maivar.core.stage import run_stage, stage_args
from maivar.video.features import extract_video_stage


def main() -> None:
    args = stage_args(__doc__, "manifest", "features")
    params = load_params(args.params)
    extract_video_stage(args.manifest, args.features, params["extract_video"],
                        runtime_settings(params, "extract_video"))


if __name__ == "__main__":
    run_stage(main)
