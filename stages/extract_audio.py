"""Stage extract_audio: audio images -> pooled features of a frozen timm backbone (Inception-ResNet-v2)."""

from maivar.audio.features import extract_audio_stage
from maivar.core.stage import run_stage, stage_args
from maivar.settings.base import read_params
from maivar.settings.extract import ExtractAudioSettings
from maivar.settings.runtime import RuntimeSettings


def main() -> None:
    args = stage_args(__doc__, "images", "weights", "features")
    params = read_params(args.params)
    settings = ExtractAudioSettings.from_params(params)
    runtime = RuntimeSettings.from_params(params)
    extract_audio_stage(args.images, args.features, args.weights, settings=settings, runtime=runtime)


if __name__ == "__main__":
    run_stage(main)
