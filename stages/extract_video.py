"""Stage extract_video: manifest videos -> per-segment features of a frozen TSN (MMAction2)."""

from maivar.core.stage import run_stage, stage_args
from maivar.settings.base import read_params
from maivar.settings.extract import ExtractVideoSettings
from maivar.settings.runtime import RuntimeSettings
from maivar.video.features import extract_video_stage


def main() -> None:
    args = stage_args(__doc__, "manifest", "weights", "features")
    params = read_params(args.params)
    settings = ExtractVideoSettings.from_params(params)
    runtime = RuntimeSettings.from_params(params)
    extract_video_stage(args.manifest, args.features, args.weights, settings=settings, runtime=runtime)


if __name__ == "__main__":
    run_stage(main)
