"""The ``maivar`` command (also ``python -m maivar``).

The pipeline itself runs through DVC (``dvc repro``, ``dvc exp run``); this command holds what is not a
stage. ``maivar check-deps`` checks that dvc.yaml declares every module each stage imports.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata


def _version() -> str:
    try:
        return metadata.version("maivar")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


def check_deps(args: argparse.Namespace) -> int:
    from .stage_deps import missing_deps

    try:
        report = missing_deps(args.root, args.dvc_yaml)
    except (OSError, SyntaxError, KeyError) as exc:
        print(f"error: cannot check {args.dvc_yaml}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    bad = {stage: paths for stage, paths in report.items() if paths}
    for stage, paths in report.items():
        print(f"{stage}: {'ok' if not paths else 'MISSING ' + ', '.join(paths)}")
    if bad:
        print(f"error: {len(bad)} stage(s) import modules that dvc.yaml does not list as deps: add them (or a folder "
              "holding them) to the stage's deps, or DVC may serve stale outputs", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maivar",
        description="MAiVAR: audio-image + video action recognition as a DVC pipeline. Run the pipeline with "
                    "`dvc repro`; this command holds the tools around it.",
    )
    parser.add_argument("--version", action="version", version=f"maivar {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    deps = commands.add_parser("check-deps", help="check that dvc.yaml lists every module each stage imports",
                               description="Follow each stage's imports from its stages/*.py entry point and "
                                           "report the project modules its deps in dvc.yaml do not cover.")
    deps.add_argument("--root", default=".", help="the repository (default: the current folder)")
    deps.add_argument("--dvc-yaml", default="dvc.yaml", help="the pipeline file, relative to --root")
    deps.set_defaults(func=check_deps)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
