"""Stage extract_audio: audio images -> pooled features of a frozen timm backbone (Inception-ResNet-v2)."""

from maivar.audio.features import extract_audio_stage
from maivar.core.params import load_params, runtime_settings
from maivar.core.stage import run_stage, stage_args


def main() -> None:
    args = stage_args(__doc__, "images", "features")
    params = load_params(args.params)
    extract_audio_stage(args.images, args.features, params["extract_audio"],
                        runtime_settings(params, "extract_audio"))


if __name__ == "__main__":
    run_stage(main)
