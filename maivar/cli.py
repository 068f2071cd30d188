"""The ``maivar`` command (also ``python -m maivar``).

The pipeline itself runs through DVC (``dvc repro``, ``dvc exp run``); this command holds what is not a
stage. ``maivar predict PATH...`` runs a trained run (the workspace's, or a revision's / experiment's) on new
videos with the pipeline's own preprocessing (:mod:`maivar.predict`); ``maivar report`` prints the heads'
accuracies and writes the report page (Fig. 6, confusion matrices, previews: :mod:`maivar.report`);
``maivar preset FILE`` runs a params overlay (e.g. presets/paper.yaml) as a named DVC experiment;
``maivar check-params`` checks every section of params.yaml with the stages' own typed settings
(:mod:`maivar.settings`); ``maivar check-deps`` checks that dvc.yaml declares every module each stage imports;
``maivar stage-cmd STAGE`` prints a stage's command from dvc.yaml (``--script``: for torchrun, docs/SCALING.md);
``maivar weights list|fetch|verify`` lists the known backbone weights, downloads one (checked), checks the
workspace's weights files (:mod:`maivar.extraction.sources`, :mod:`maivar.extraction.weights`);
``maivar convert-bninception SRC DST`` turns public BN-Inception weights (the PyTorch port's layout, or a
tsn-pytorch checkpoint) into a checkpoint that ``extract_video.checkpoint`` can point at
(:mod:`maivar.video.bninception`).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def _version() -> str:
    try:
        return metadata.version("maivar")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


def stage_cmd(args: argparse.Namespace) -> int:
    """Print a stage's command from dvc.yaml, its paths filled in; ``--script`` leaves out the interpreter, for a
    launcher that takes the script (``torchrun ... $(maivar stage-cmd --script extract_video)``)."""
    from .stage_deps import read_stages

    try:
        stages = read_stages(args.root, args.dvc_yaml)
    except (OSError, KeyError) as exc:
        print(f"error: cannot read {args.dvc_yaml}: {exc}", file=sys.stderr)
        return 2
    if args.stage not in stages:
        print(f"error: no stage {args.stage!r} in {args.dvc_yaml} (stages: {', '.join(stages)})", file=sys.stderr)
        return 2
    words = shlex.split(stages[args.stage].cmd)
    if args.script:
        if not words or words[0] != "python":
            print(f"error: the command of {args.stage} does not start with python: {stages[args.stage].cmd}",
                  file=sys.stderr)
            return 2
        words = words[1:]
    print(shlex.join(words))
    return 0


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


def check_params(args: argparse.Namespace) -> int:
    """The stages' verdict on a whole params file: each section through its settings type (one line)."""
    from .core.errors import PipelineError
    from .settings.check import SECTIONS, check_params

    try:
        check_params(args.params)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.params}: ok (representation, {', '.join(SECTIONS)})")
    return 0


def preset(args: argparse.Namespace) -> int:
    from .core.dvc_cmd import dvc_argv
    from .core.errors import PipelineError
    from .presets import check_overlay, exp_run_command, load_preset

    try:
        values = load_preset(args.file, args.params)
        check_overlay(values, args.params, extra=args.set or [], where=f"preset {args.file} on {args.params}")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cmd = exp_run_command(values, args.name or Path(args.file).stem, queue=args.queue, extra=args.set or [])
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    try:
        argv = dvc_argv(*cmd[1:])  # this interpreter's DVC: no activated environment needed
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return subprocess.run(argv).returncode


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


def weights(args: argparse.Namespace) -> int:
    """``maivar weights list|fetch|verify``: the known weights, downloading one, checking the workspace's."""
    from .core.errors import PipelineError
    from .extraction.sources import KNOWN, fetch, file_name

    if args.action == "list":
        for known in KNOWN.values():
            print(f"{known.name}  [{known.modality}]  {known.what}\n  url: {known.url}\n"
                  f"  sha256: {_published(known.sha256)}\n  licence: {known.licence}\n  params: "
                  + ", ".join(f"{k}: {v.format(file=f'{args.dir}/{file_name(known)}')}" for k, v in known.params))
        return 0
    if args.action == "fetch":
        if args.name not in KNOWN:
            print(f"error: no known weights {args.name!r} (maivar weights list: {', '.join(KNOWN)})", file=sys.stderr)
            return 2
        known = KNOWN[args.name]
        try:
            path, digest = fetch(known, args.dir)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{path}: sha256 {digest}")
        if known.then:
            print(f"then run: {known.then.format(file=path)}")
        print("set in params.yaml: " + ", ".join(f"{k}: {v.format(file=path)}" for k, v in known.params))
        return 0
    return verify_weights(args)


def _published(sha256: str | None) -> str:
    if sha256 is None:
        return "none published (fetch prints the download's)"
    return sha256 if len(sha256) == 64 else f"{sha256}... (the prefix the file name publishes)"


def verify_weights(args: argparse.Namespace) -> int:
    from .core.errors import PipelineError
    from .extraction.weights import audio_weights_request, verify_weights_file
    from .runs import RunFiles, read_paths
    from .settings.base import read_params
    from .settings.extract import ExtractAudioSettings, ExtractVideoSettings
    from .video.config import video_weights_request

    root = Path(args.root)
    paths = read_paths(RunFiles(root))  # dvc.yaml's `vars: paths`, where each path is named once
    try:
        params = read_params(str(root / "params.yaml"))
        requests = {"audio": audio_weights_request(ExtractAudioSettings.from_params(params)),
                    "video": video_weights_request(ExtractVideoSettings.from_params(params))}
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad = 0
    for modality, request in requests.items():
        path = root / paths[f"{modality}_weights"]
        ok, message = verify_weights_file(path, request)
        bad += not ok
        print(f"{modality}: {path}: {message}")
    return 1 if bad else 0


def predict(args: argparse.Namespace) -> int:
    import logging

    from .core.errors import PipelineError
    from .predict.engine import Predictor, predictor_settings
    from .predict.output import expand_paths, format_json, shown
    from .predict.run import load_run

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.top_k < 1:
        print("error: --top-k must be at least 1", file=sys.stderr)
        return 2
    videos, problems = expand_paths(args.paths)
    try:
        run = load_run(args.root, args.rev)
        try:
            settings = predictor_settings(args.params or str(Path(args.root) / "params.yaml"), args.device)
            predictor = Predictor(run, device=str(settings["device"]), workers=settings["workers"],
                                  batch_images=settings["batch_size"], batch_videos=settings["batch_videos"])
            print(f"run: {run.name} (audio {run.audio.representation}, {len(run.classes)} classes, on "
                  f"{predictor.device}); {len(videos)} video(s)", file=sys.stderr, flush=True)
            results = problems + list(_stream(predictor, videos, args, run.classes, problems))
        finally:
            run.close()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        sys.stdout.write(format_json(results, args.top_k, run.classes))
    for r in results:  # what the table shows in place, the machine formats say on stderr
        if args.format != "table" and (r.error or r.skipped):
            why = f"error: {r.error}" if r.error else f"video branch only: {r.skipped.get('audio')}"
            print(shown(f"{r.path}: {why}"), file=sys.stderr)
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"{failed} of {len(results)} path(s) could not be predicted", file=sys.stderr)
    return 1 if failed else 0


def _stream(predictor, videos, args, classes, problems):
    """Yield each prediction, printing the table blocks / CSV rows as they come (JSON is printed at the end)."""
    from .predict.output import format_csv, format_table

    if args.format == "csv":
        sys.stdout.write(format_csv(problems, args.top_k, classes))
    elif args.format == "table":
        for p in problems:
            sys.stdout.write(format_table(p, args.top_k, classes))
    for prediction in predictor.predict(videos, progress=len(videos) > 1):
        if args.format == "csv":
            sys.stdout.write(format_csv([prediction], args.top_k, classes, header=False))
        elif args.format == "table":
            sys.stdout.write(format_table(prediction, args.top_k, classes))
        sys.stdout.flush()
        yield prediction


def report(args: argparse.Namespace) -> int:
    from .core.errors import PipelineError
    from .report import summary_table, write_report

    try:
        runs, out = write_report(args.root, args.rev, args.out, workspace=not args.no_workspace)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(runs))
    print(f"report: {out} (Fig. 6 curves, confusion matrices, the test clips each head got wrong, audio-image "
          "previews); DVC's own page: dvc plots show")
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
    chk = commands.add_parser("check-params", help="check every section of params.yaml, as the stages do",
                              description="Convert each section of the params file with its settings type (the "
                                          "checks every stage makes before it reads a file): the first missing, "
                                          "unknown or out-of-range key is one line; exit status 1.")
    chk.add_argument("--params", default="params.yaml", metavar="FILE", help="the file (default: params.yaml)")
    chk.set_defaults(func=check_params)
    cmd = commands.add_parser("stage-cmd", help="print a stage's command from dvc.yaml (e.g. for torchrun)",
                              description="Print the stage's command as dvc.yaml declares it, paths filled in.")
    cmd.add_argument("stage", help="a stage of dvc.yaml, e.g. extract_video")
    cmd.add_argument("--script", action="store_true",
                     help="without the leading python: the script and its arguments, as torchrun takes them")
    cmd.add_argument("--root", default=".", help="the repository (default: the current folder)")
    cmd.add_argument("--dvc-yaml", default="dvc.yaml", help="the pipeline file, relative to --root")
    cmd.set_defaults(func=stage_cmd)
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
    wts = commands.add_parser(
        "weights", help="the known backbone weights: list, fetch (download, checked), verify the workspace's",
        description="list: the known weights (URL, sha256, licence, the params.yaml settings to use them). fetch "
                    "NAME: download one into --dir, streamed and checked before it is kept. verify: check "
                    "data/weights/*.safetensors against params.yaml and their sources, as the weights stage does.")
    wts.add_argument("action", choices=("list", "fetch", "verify"))
    wts.add_argument("name", nargs="?", help="fetch: the known weights' name (maivar weights list)")
    wts.add_argument("--dir", default="weights", help="fetch: where to put the download (default: weights/)")
    wts.add_argument("--root", default=".", help="verify: the repository (default: the current folder)")
    wts.set_defaults(func=weights)
    pred = commands.add_parser(
        "predict", help="predict the action in new videos with a trained run (audio, video and fusion heads)",
        description="Run each video through the pipeline's own preprocessing (ffmpeg demux and prepare's audio "
                    "checks, the audio image, both frozen backbones) with the settings and weights recorded in the "
                    "run's models, stores and dvc.lock (not today's params.yaml), and print each branch's top-k "
                    "classes. A video without usable sound gets the video branch only; a damaged one its reason. "
                    "Exit status 1 when some video could not be predicted, 2 when the run cannot be used.")
    pred.add_argument("paths", nargs="+", metavar="PATH", help="video files, folders (every video under them) or globs")
    pred.add_argument("-k", "--top-k", type=int, default=5, help="classes per branch (default: 5)")
    pred.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output (default: table)")
    pred.add_argument("--rev", help="use the models of this git revision or DVC experiment (default: the workspace)")
    pred.add_argument("--root", default=".", help="the repository (default: the current folder)")
    pred.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: params.yaml's runtime.device)")
    pred.add_argument("--params", help="where the runtime section (device, workers, batch sizes) is read (default: "
                                       "params.yaml in --root)")
    pred.add_argument("-v", "--verbose", action="store_true", help="log what the backbones and workers do")
    pred.set_defaults(func=predict)
    rep = commands.add_parser(
        "report", help="print the heads' accuracies and write the report page (Fig. 6, confusion, previews)",
        description="Print top-1, top-5 and mean class accuracy of each head and write one offline HTML page: the "
                    "paper's Fig. 6 curves (one color per head), each head's confusion matrix, the test clips some "
                    "head got wrong, and the audio-image previews as a class x representation grid.")
    rep.add_argument("--rev", action="append", metavar="REV",
                     help="also a git revision or DVC experiment (repeatable), e.g. one per representation")
    rep.add_argument("--no-workspace", action="store_true", help="leave out the workspace's run (only the --rev ones)")
    rep.add_argument("-o", "--out", default="report/index.html", help="the page to write (default: report/index.html)")
    rep.add_argument("--root", default=".", help="the repository (default: the current folder)")
    rep.set_defaults(func=report)
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
