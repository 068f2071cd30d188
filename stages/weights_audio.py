"""Stage weights_audio: the audio backbone's weights resolved into the workspace as a file DVC tracks (checked on
every ``dvc repro``, rewritten only when what params.yaml asks for, or the checkpoint behind it, changed). The check
imports no torch; the builder (torch, timm) is imported only to write the file."""

from maivar.core.stage import run_stage, stage_args
from maivar.extraction.weights import WeightsRequest, audio_weights_request, resolve_weights
from maivar.settings.base import read_params
from maivar.settings.extract import ExtractAudioSettings


def build(request: WeightsRequest):
    from maivar.audio.backbone import build_audio_weights

    return build_audio_weights(request)


def main() -> None:
    args = stage_args(__doc__, "weights")
    params = read_params(args.params)
    settings = ExtractAudioSettings.from_params(params)
    resolve_weights(args.weights, audio_weights_request(settings), build)


if __name__ == "__main__":
    run_stage(main)
