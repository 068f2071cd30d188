"""Stage weights_video: the video backbone's weights resolved into the workspace as a file DVC tracks (checked on
every ``dvc repro``, rewritten only when what params.yaml asks for, or the checkpoint behind it, changed)."""

from maivar.core.stage import run_stage, stage_args
from maivar.extraction.weights import resolve_weights
from maivar.settings.base import read_params
from maivar.settings.extract import ExtractVideoSettings
from maivar.video.tsn import build_video_weights, video_weights_request


def main() -> None:
    args = stage_args(__doc__, "weights")
    params = read_params(args.params)
    settings = ExtractVideoSettings.from_params(params)
    resolve_weights(args.weights, video_weights_request(settings), build_video_weights)


if __name__ == "__main__":
    run_stage(main)
