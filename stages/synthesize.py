"""Stage synthesize: write the embedded default dataset (a synthetic UCF101 look-alike)."""

from maivar.core.params import load_params, resolve_workers
from maivar.core.stage import run_stage, stage_args
from maivar.synthetic import synthesize


def main() -> None:
    args = stage_args(__doc__, "out")
    p = dict(load_params(args.params)["synthesize"])
    workers = resolve_workers(p.pop("workers", 0))
    synthesize(args.out, workers=workers, **p)


if __name__ == "__main__":
    run_stage(main)
