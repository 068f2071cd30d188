"""Stage synthesize: write the embedded default dataset (a synthetic UCF101 look-alike) to data/synthetic."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maivar.params import load_params, resolve_workers  # noqa: E402
from maivar.stage import run_stage  # noqa: E402
from maivar.synthetic import synthesize  # noqa: E402

OUT = "data/synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--out", default=OUT, help=f"output folder (default: {OUT})")
    args = parser.parse_args()
    p = dict(load_params(args.params)["synthesize"])
    workers = resolve_workers(p.pop("workers", 0))
    synthesize(args.out, workers=workers, **p)


if __name__ == "__main__":
    run_stage(main)
