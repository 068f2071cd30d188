"""Print a Table II-style table (paper: audio-only and fusion top-1 per representation) from DVC experiments.

    python scripts/table2.py                        # runs `dvc exp show --json` here
    python scripts/table2.py --by backbone          # the Fig. 4 grid: audio top-1 per audio backbone
    dvc exp show --json -A > exps.json && python scripts/table2.py --json exps.json
    python scripts/table2.py --compare              # the paper preset beside paper_corrected (docs/EXPERIMENTS.md)

One row per experiment (and per baseline commit) that has ``metrics/metrics.json``; the workspace is
left out unless ``--workspace`` is given. The best audio and fusion accuracy are marked in bold, rows are
in the order of the representation table (:mod:`maivar.audio.representations`: the paper's Table II, then
ours) under the table's titles, or sorted by backbone name.

``--compare A B`` (default ``paper paper_corrected``) prints the two Table II columns side by side: per
representation, the audio and fusion top-1 of the experiment named ``A`` or ``A-<anything>`` and of the one
named ``B`` or ``B-<anything>`` (the queued grid of docs/EXPERIMENTS.md names them ``paper-<representation>`` and
``paper_corrected-<representation>``), beside the paper's own Table II.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from maivar.audio.representations import NAMES, REPRESENTATIONS
from maivar.core.dvc_cmd import dvc_argv
from maivar.core.errors import PipelineError

METRICS = "metrics/metrics.json"
TITLES = {name: r.title for name, r in REPRESENTATIONS.items()}
KEYS = {"representation": ("representation",), "backbone": ("extract_audio", "backbone")}
# The paper's Table II (audio MLP, fusion; top-1 %), its video-only accuracy 75.67 %
PAPER_TABLE2 = {"waveplot": (12.08, 86.21), "spectral_centroid": (13.22, 86.26), "spectral_rolloff": (16.46, 86.00),
                "mfcc": (12.96, 83.95), "mfcc_scaled": (17.43, 86.11), "chromagram": (15.48, 87.91)}


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _runs(exps: list, workspace: bool):
    """(name, data) for every baseline commit and experiment in `dvc exp show --json` output."""
    for entry in exps:
        if entry.get("rev") == "workspace" and not workspace:
            continue
        rev = str(entry.get("rev", ""))
        name = entry.get("name") or (rev[:7] if len(rev) == 40 else rev)
        if entry.get("data"):
            yield name, entry["data"]
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("data"):
                    yield rev.get("name") or exp.get("name") or str(rev.get("rev", ""))[:7], rev["data"]


def table_rows(exps: list, by: str = "representation", workspace: bool = False) -> list[dict]:
    rows = []
    for name, data in _runs(exps, workspace):
        metrics = _get(data, "metrics", METRICS, "data")
        params = _get(data, "params", "params.yaml", "data") or {}
        if not metrics:
            continue
        rows.append({
            "run": name,
            "key": _get(params, *KEYS[by]) or metrics.get("representation"),
            "audio": _get(metrics, "audio", "top1"),
            "video": _get(metrics, "video", "top1"),
            "fusion": _get(metrics, "fusion", "top1"),
            "init": _get(params, "fusion_mlp", "init"),
        })
    order = {r: i for i, r in enumerate(NAMES)} if by == "representation" else {}
    return sorted(rows, key=lambda r: (order.get(r["key"], len(order)), str(r["key"]), r["run"]))


def format_table(rows: list[dict], by: str = "representation") -> str:
    def fmt(v, best):
        if v is None:
            return "-"
        s = f"{v:.2f}"
        return f"**{s}**" if best is not None and v == best and len(rows) > 1 else s

    best_a = max((r["audio"] for r in rows if r["audio"] is not None), default=None)
    best_f = max((r["fusion"] for r in rows if r["fusion"] is not None), default=None)
    head = "Representation" if by == "representation" else "Audio backbone"
    lines = [f"| {head} | Audio | Fusion (Audio+Video) | Experiment |", "| --- | ---: | ---: | --- |"]
    for r in rows:
        label = TITLES.get(r["key"], str(r["key"])) if by == "representation" else str(r["key"])
        if r["init"] == "scratch":
            label += " (fusion from scratch)"
        lines.append(f"| {label} | {fmt(r['audio'], best_a)} | {fmt(r['fusion'], best_f)} | {r['run']} |")
    videos = sorted({r["video"] for r in rows if r["video"] is not None})
    if videos:
        v = f"{videos[0]:.2f}%" if len(videos) == 1 else f"{videos[0]:.2f}-{videos[-1]:.2f}%"
        lines.append(f"\nTop-1 accuracy in percent on the test split. Video-only accuracy is {v}.")
    return "\n".join(lines)


def _preset_of(run: str, presets: list[str]) -> str | None:
    """The preset a run name belongs to: ``A`` for ``A`` or ``A-<anything>``."""
    for preset in presets:
        if run == preset or run.startswith(preset + "-"):
            return preset
    return None


def compare_rows(rows: list[dict], presets: list[str]) -> list[dict]:
    """Per representation (the table's order), ``{"key", <preset>: row or None ...}`` for the runs of
    ``presets``; a ValueError when two runs of one preset show the same representation."""
    found: dict[str, dict] = {}
    for r in rows:
        preset = _preset_of(str(r["run"]), presets)
        if preset is None:
            continue
        slot = found.setdefault(r["key"], {"key": r["key"], **dict.fromkeys(presets)})
        if slot[preset] is not None:
            raise ValueError(f"two runs of {preset} show {r['key']}: {slot[preset]['run']} and {r['run']}")
        slot[preset] = r
    order = {name: i for i, name in enumerate(NAMES)}
    return sorted(found.values(), key=lambda s: (order.get(s["key"], len(order)), str(s["key"])))


def format_compare(slots: list[dict], presets: list[str]) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:.2f}"

    head = ["Representation", "Paper: Audio", "Paper: Fusion"]
    for p in presets:
        head += [f"{p}: Audio", f"{p}: Fusion"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for slot in slots:
        paper = PAPER_TABLE2.get(slot["key"], (None, None))
        cells = [TITLES.get(slot["key"], str(slot["key"])), fmt(paper[0]), fmt(paper[1])]
        for p in presets:
            r = slot[p] or {}
            cells += [fmt(r.get("audio")), fmt(r.get("fusion"))]
        lines.append("| " + " | ".join(cells) + " |")
    runs = [f"{p}: {', '.join(s[p]['run'] for s in slots if s[p]) or 'none'}" for p in presets]
    lines.append("\nTop-1 accuracy in percent on the test split (the paper's: video-only 75.67%). Runs: "
                 + "; ".join(runs) + ".")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="output of `dvc exp show --json` (default: run it here)")
    ap.add_argument("--by", choices=sorted(KEYS), default="representation")
    ap.add_argument("--workspace", action="store_true", help="include the workspace row")
    ap.add_argument("--compare", nargs="*", metavar="PRESET",
                    help="the Table II columns of two presets' runs side by side (default: paper paper_corrected)")
    args = ap.parse_args()
    if args.json:
        text = args.json.read_text()
    else:
        try:
            argv = dvc_argv("exp", "show", "--json")  # this interpreter's DVC: no activated environment needed
        except PipelineError as exc:
            sys.exit(f"error: {exc}")
        out = subprocess.run(argv, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: dvc exp show failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}")
        text = out.stdout
    try:
        exps = json.loads(text)
    except json.JSONDecodeError as exc:
        sys.exit(f"error: not the JSON of `dvc exp show --json` ({exc})")
    rows = table_rows(exps, args.by, args.workspace)
    if not rows:
        sys.exit("error: no run has metrics/metrics.json: run `dvc repro` or queue experiments first")
    if args.compare is not None:
        presets = args.compare or ["paper", "paper_corrected"]
        try:
            slots = compare_rows(rows, presets)
        except ValueError as exc:
            sys.exit(f"error: {exc}")
        if not slots:
            sys.exit(f"error: no run is named {' or '.join(presets)} (or <name>-...): see docs/EXPERIMENTS.md")
        print(format_compare(slots, presets))
        return
    print(format_table(rows, args.by))


if __name__ == "__main__":
    main()
