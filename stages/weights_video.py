"""Stage weights_video: the video backbone's weights resolved into the workspace as a file DVC tracks (checked on
every ``dvc repro``, rewritten only when what params.yaml asks for, or the checkpoint behind it, changed). The check
imports no torch; the builder (torch, MMAction2) is imported only to write the file."""

from maivar.core.stage import run_stage, stage_args
from maivar.extraction.weights import WeightsRequest, resolve_weights
from maivar.settings.base import read_params
from maivar.settings.extract import ExtractVideoSettings
from maivar.video.config import video_weights_request


def build(request: WeightsRequest):
    from maivar.video.tsn import build_video_weights

    return build_video_weights(request)


def main() -> None:
    args = stage_args(__doc__, "weights")
    params = read_params(args.params)
    settings = ExtractVideoSettings.from_params(params)
    resolve_weights(args.weights, video_weights_request(settings), build)


if __name__ == "__main__":
    run_stage(main)
