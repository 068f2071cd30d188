"""Stage synthesize: write the embedded default dataset (a synthetic UCF101 look-alike)."""

from maivar.core.stage import run_stage, stage_args
from maivar.settings.base import read_params
from maivar.settings.runtime import RuntimeSettings
from maivar.settings.synthesize import SynthesizeSettings
from maivar.synthetic import synthesize


def main() -> None:
    args = stage_args(__doc__, "out")
    params = read_params(args.params)
    settings = SynthesizeSettings.from_params(params)
    runtime = RuntimeSettings.from_params(params)
    synthesize(args.out, settings=settings, workers=runtime.worker_count)


if __name__ == "__main__":
    run_stage(main)
