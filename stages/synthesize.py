"""Stage synthesize: write the embedded default dataset (a synthetic UCF101 look-alike)."""

from maivar.core.params import load_params, resolve_workers, runtime_settings
from maivar.core.stage import run_stage, stage_args
from maivar.synthetic import synthesize


def main() -> None:
    args = stage_args(__doc__, "out")
    params = load_params(args.params)
    workers = resolve_workers(runtime_settings(params, "synthesize")["workers"])
    synthesize(args.out, workers=workers, **params["synthesize"])


if __name__ == "__main__":
    run_stage(main)
