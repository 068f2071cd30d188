"""The ``maivar`` command (also ``python -m maivar``).

The pipeline itself runs through DVC (``dvc repro``, ``dvc exp run``); this command holds what is not a
stage. ``maivar preset FILE`` runs a params overlay (e.g. presets/paper.yaml) as a named DVC experiment;
``maivar check-deps`` checks that dvc.yaml declares every module each stage imports;
``maivar convert-bninception SRC DST`` turns public BN-Inception weights (the PyTorch port's layout, or a
tsn-pytorch checkpoint) into a checkpoint that ``extract_video.checkpoint`` can point at
(:mod:`maivar.video.bninception`).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path


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


def preset(args: argparse.Namespace) -> int:
    from .core.errors import PipelineError
    from .presets import exp_run_command, load_preset

    try:
        values = load_preset(args.file, args.params)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cmd = exp_run_command(values, args.name or Path(args.file).stem, queue=args.queue, extra=args.set or [])
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    return subprocess.run([dvc, *cmd[1:]]).returncode


def convert_bninception(args: argparse.Namespace) -> int:
    from .core.errors import PipelineError
    from .video.bninception import convert_checkpoint

    try:
        written, dropped = convert_checkpoint(args.src, args.dst)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}: {written} BN-Inception backbone tensors (backbone.*); dropped the classifier: "
          f"{', '.join(dropped) or 'none in the file'}")
    print(f"use it: extract_video.config: configs/tsn_bninception_video.py, extract_video.checkpoint: {args.dst}")
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
    pre = commands.add_parser("preset", help="run a params overlay (e.g. presets/paper.yaml) as a DVC experiment",
                              description="Check a preset's keys against params.yaml and run `dvc exp run -n NAME "
                                          "-S key=value ...` with its values (printed first).")
    pre.add_argument("file", help="the preset, e.g. presets/paper.yaml")
    pre.add_argument("-n", "--name", help="the experiment's name (default: the file's stem, e.g. paper)")
    pre.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                     help="another params.yaml value on top of the preset's (repeatable), as dvc exp run -S")
    pre.add_argument("--queue", action="store_true", help="queue the experiment (dvc queue start runs it)")
    pre.add_argument("--dry-run", action="store_true", help="print the dvc command without running it")
    pre.add_argument("--params", default="params.yaml", help="the parameters file the keys must exist in")
    pre.set_defaults(func=preset)
    convert = commands.add_parser(
        "convert-bninception", help="convert public BN-Inception weights into a checkpoint for extract_video",
        description="Read BN-Inception weights in the public PyTorch port's layout (bare keys such as "
                    "conv1_7x7_s2.weight, classifier last_linear.* or fc.*; or a tsn-pytorch checkpoint, "
                    "module.base_model.* with classifier module.new_fc.*) and write an MMAction2-style checkpoint "
                    "(backbone.* keys, the classifier dropped) for configs/tsn_bninception_video.py.")
    convert.add_argument("src", help="the port's state dict or tsn-pytorch checkpoint (.pth, .pth.tar)")
    convert.add_argument("dst", help="the checkpoint to write")
    convert.set_defaults(func=convert_bninception)
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
