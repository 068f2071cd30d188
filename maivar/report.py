"""The report people read: one self-contained HTML page, and a summary table on the terminal (``maivar report``).

For the workspace's run and any revisions or experiments given (``--rev``), from the files the pipeline writes:

- a summary table: top-1, top-5 and mean class accuracy of each head (``metrics/metrics.json``), also printed;
- the paper's Fig. 6: test accuracy, training loss and training accuracy per epoch (the dvclive curves), one
  color per head (audio, video, fusion) and, with several runs, one dash pattern per run;
- each head's confusion matrix and the test clips some head got wrong (``metrics/predictions.csv``);
- the audio-image previews as a grid: one row per class, one column per run (labelled with its representation),
  so that experiments over the representations (``dvc exp run -S representation=...``) sit side by side.

The page runs offline: Vega, Vega-Lite and Vega-Embed are inlined from ``.dvc/offline_plots.html`` (the template
``dvc plots show`` uses, see scripts/offline_plots_template.py) and the previews are embedded as data URLs.
When every plot is drawn the page sets ``data-plots="drawn"`` on its body (what the browser test waits for).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from maivar.core.atomic import write_text
from maivar.core.errors import PipelineError
from maivar.core.names import safe_name
from maivar.evaluation import HEADS
from maivar.runs import RunFiles, read_paths

DEFAULT_OUT = "report/index.html"
TEMPLATE = ".dvc/offline_plots.html"
COLOURS = ("#e45756", "#4c78a8", "#54a24b")  # audio, video, fusion: one color per head everywhere
CURVES = (  # (dvclive file under <live>/plots/metrics/, its column, title, y axis)
    ("test/acc.tsv", "acc", "Fig. 6: test accuracy per epoch", "test accuracy (%)"),
    ("train/loss.tsv", "loss", "Fig. 6: training loss per epoch", "training loss (cross-entropy + L1)"),
    ("train/acc.tsv", "acc", "Fig. 6: training accuracy per epoch", "training accuracy (%)"),
)
HEAD_PREDS = tuple(f"{h}_pred" for h in HEADS)  # metrics/predictions.csv's columns of each head's class
METRICS = (("top1", "top-1"), ("top5", "top-5"), ("mean_class_acc", "mean class acc"))


@dataclass
class RunData:
    """What the report shows of one run."""

    name: str
    metrics: dict
    curves: dict[str, list[dict]] = field(default_factory=dict)  # curve file -> [{epoch, value, head, run}]
    predictions: list[dict] = field(default_factory=list)  # rows of metrics/predictions.csv
    previews: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)  # class -> [(clip id, PNG)]
    paths: dict = field(default_factory=dict)

    @property
    def representation(self) -> str:
        return str(self.metrics.get("representation") or "?")


def read_run(root: str | Path = ".", rev: str | None = None) -> RunData:
    """The report's data of the workspace (``rev`` None) or of a revision / experiment."""
    files = RunFiles(root, rev)
    name = "workspace" if rev is None else rev
    try:
        paths = read_paths(files)
        text = files.read_text(paths["metrics"])
        if text is None:
            raise PipelineError(f"{name} has no {paths['metrics']}: run the pipeline (dvc repro) first")
        run = RunData(name, json.loads(text), paths=paths)
        for head in HEADS:
            for curve, column, _, _ in CURVES:
                tsv = files.read_text(f"{paths[f'{head}_live']}/plots/metrics/{curve}")
                for row in csv.DictReader(io.StringIO(tsv or ""), delimiter="\t"):
                    run.curves.setdefault(curve, []).append(
                        {"epoch": int(row["step"]) + 1, "value": float(row[column]), "head": head, "run": name})
        text = files.read_text(paths["predictions"])
        run.predictions = list(csv.DictReader(io.StringIO(text))) if text else []
        # a preview is named <safe class>__<safe id>.png (maivar.audio.render.preview_name): its label is data,
        # found again through the predictions' labels (a class no test clip has keeps its safe name)
        labels = {safe_name(r[k], forbid=("__",)): r[k] for r in run.predictions for k in ("label", *HEAD_PREDS)}
        for image in files.listdir(paths["previews"]):
            if image.endswith(".png") and "__" in image:
                cls, clip = image[: -len(".png")].split("__", 1)
                run.previews.setdefault(labels.get(cls, cls), []).append(
                    (clip, files.read_bytes(f"{paths['previews']}/{image}")))
        return run
    finally:
        files.close()


# ------------------------------------------------------------------------------------------ the terminal
def summary_table(runs: list[RunData]) -> str:
    """A plain-text table: each run's heads with top-1 / top-5 / mean class accuracy, then what they were."""
    header = ["run", "head", *(label for _, label in METRICS)]
    rows = [[r.name, h, *(_pct((r.metrics.get(h) or {}).get(key)) for key, _ in METRICS)] for r in runs for h in HEADS]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    lines += [run_facts(r) for r in runs]
    return "\n".join(lines)


def run_facts(run: RunData) -> str:
    """One line: the run's test clips, representation and whether its backbones were pretrained."""
    m = run.metrics
    pretrained = m.get("pretrained") or {}
    return (f"{run.name}: {m.get('test_clips', '?')} test clips, audio images {run.representation}, pretrained "
            f"backbones: audio {_yes(pretrained.get('audio'))}, video {_yes(pretrained.get('video'))}")


def _pct(value) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def _yes(flag) -> str:
    return {True: "yes", False: "no (random weights)"}.get(flag, "unknown")


# ------------------------------------------------------------------------------------------------- plots
def curve_spec(rows: list[dict], title: str, y_title: str, several_runs: bool) -> dict:
    encoding = {
        "x": {"field": "epoch", "type": "quantitative", "title": "epoch"},
        "y": {"field": "value", "type": "quantitative", "title": y_title, "scale": {"zero": False}},
        "color": {"field": "head", "type": "nominal", "title": "head",
                  "scale": {"domain": list(HEADS), "range": list(COLOURS)}},
        "tooltip": [{"field": "run"}, {"field": "head"}, {"field": "epoch"}, {"field": "value", "title": y_title}],
    }
    if several_runs:
        encoding["strokeDash"] = {"field": "run", "type": "nominal", "title": "run"}
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title, "width": 360,
            "height": 240, "data": {"values": rows}, "mark": {"type": "line", "strokeWidth": 2},
            "encoding": encoding}


def plot_label(label: str) -> str:
    """A class name as a plot shows it: line breaks and control characters (which Vega cannot hold in the
    expressions Vega-Lite compiles a sort order into: U+2028 breaks them) written as escapes, and ``\\`` as
    ``\\\\``, so that distinct labels stay distinct."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Zl", "Zp") else "\\\\" if c == "\\"
                   else c for c in label)


def confusion_spec(predictions: list[dict], head: str, color: str) -> dict:
    """A heatmap of test clips per (true class, the head's class), with the counts written in the cells."""
    pairs = [(plot_label(r["label"]), plot_label(r[f"{head}_pred"])) for r in predictions]
    classes = sorted({a for a, _ in pairs} | {p for _, p in pairs})
    counts = Counter(pairs)
    values = [{"actual": a, "predicted": p, "clips": counts.get((a, p), 0)} for a in classes for p in classes]
    correct = sum(counts[(c, c)] for c in classes)
    side = max(160, 24 * len(classes))
    axis = {"labelLimit": 140}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"{head}: {correct} of {len(predictions)} test clips right", "width": side, "height": side,
        "data": {"values": values},
        "encoding": {"x": {"field": "predicted", "type": "nominal", "sort": classes, "axis": axis},
                     "y": {"field": "actual", "type": "nominal", "sort": classes, "axis": axis}},
        "layer": [
            {"mark": "rect", "encoding": {
                "color": {"field": "clips", "type": "quantitative", "legend": None,
                          "scale": {"domainMin": 0, "range": ["#ffffff", color]}},
                "tooltip": [{"field": "actual"}, {"field": "predicted"}, {"field": "clips"}]}},
            {"mark": {"type": "text", "fontSize": 11},
             "encoding": {"text": {"field": "clips", "type": "quantitative"},
                          "opacity": {"condition": {"test": "datum.clips == 0", "value": 0}, "value": 1}}},
        ],
    }


# -------------------------------------------------------------------------------------------------- page
def vega_scripts(root: str | Path = ".") -> str:
    """The inlined Vega, Vega-Lite and Vega-Embed ``<script>`` elements of ``.dvc/offline_plots.html``."""
    path = Path(root) / TEMPLATE
    if not path.is_file():
        raise PipelineError(f"{path} is missing: the report inlines Vega from it (scripts/offline_plots_template.py "
                            "writes it)")
    scripts = re.findall(r"<!-- vega[^>]*-->\s*<script[^>]*>.*?</script>", path.read_text(encoding="utf8"), re.S)
    if len(scripts) != 3:
        raise PipelineError(f"{path} does not hold the three inlined Vega libraries: rebuild it with "
                            "scripts/offline_plots_template.py")
    return "\n".join(scripts)


def _json(value) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element: ``<``, ``>``, ``&`` (so neither ``</script>``
    nor ``<!--`` can end or bend the script) and the line separators U+2028/U+2029 as ``\\u`` escapes."""
    text = json.dumps(value, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _table(header: list[str], rows: list[list[str]], *, raw: bool = False, cls: str = "") -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>'.replace(' class=""', "")


def _wrong_clips(run: RunData) -> str:
    wrong = [r for r in run.predictions if any(r[f"{h}_pred"] != r["label"] for h in HEADS)]
    if not run.predictions:
        return "<p>No per-clip predictions in this run (metrics/predictions.csv).</p>"
    rows = []
    for r in wrong:
        cells = []
        for h in HEADS:
            ok = r[f"{h}_pred"] == r["label"]
            text = f"{html.escape(r[f'{h}_pred'])} ({html.escape(r[f'{h}_prob'])})"
            cells.append(text if ok else f"<span class=\"wrong\">{text}</span>")
        rows.append([html.escape(r["id"]), html.escape(r["label"]), *cells])
    counts = ", ".join(f"{h} {sum(r[f'{h}_pred'] != r['label'] for r in run.predictions)}" for h in HEADS)
    return (f"<p>{len(wrong)} of {len(run.predictions)} test clips are wrong for some head (wrong: {counts}); "
            "a head's class in red is wrong, with its probability.</p>"
            + _table(["clip", "class", *HEADS], rows, raw=True))


def _previews(runs: list[RunData]) -> str:
    shown = [r for r in runs if r.previews]
    if not shown:
        return ("<p>No audio-image previews in these runs (data/audio_images/previews: run dvc repro, or dvc pull "
                "for a revision).</p>")
    classes = sorted({c for r in shown for c in r.previews})
    header = ["class", *(f"{r.representation} ({r.name})" for r in shown)]
    rows = []
    for c in classes:
        row = [html.escape(c)]
        for r in shown:
            images = [f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(clip)}" '
                      f'title="{html.escape(clip)}" width="128" height="128">' for clip, png in r.previews.get(c, [])]
            row.append("".join(images) or "&ndash;")
        rows.append(row)
    return _table(header, rows, raw=True)


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
{scripts}
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }}
table.summary td:nth-child(n+4) {{ text-align: right; font-variant-numeric: tabular-nums; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }}
.wrong {{ color: #c0392b; font-weight: 600; }}
img {{ image-rendering: pixelated; margin: 2px; border: 1px solid #ccc; }}
.note {{ color: #666; }}
</style>
</head>
<body data-plots="pending">
<h1>{title}</h1>
<p class="note">{note}</p>
{body}
<script type="text/javascript">
const maivarSpecs = {specs};
Promise.all(Object.entries(maivarSpecs).map(([id, spec]) =>
  vegaEmbed("#" + id, spec, {{actions: false, renderer: "svg"}})))
  .then(() => {{ document.body.dataset.plots = "drawn"; }},
        (err) => {{ document.body.dataset.plots = "failed"; console.error(err); }});
</script>
</body>
</html>
"""


def render_page(runs: list[RunData], scripts: str) -> str:
    specs: dict[str, dict] = {}
    several = len(runs) > 1

    def plot(spec: dict) -> str:
        pid = f"plot{len(specs) + 1}"
        specs[pid] = spec
        return f'<div class="plot" id="{pid}"></div>'

    summary_rows = []
    for r in runs:
        for h in HEADS:
            m = r.metrics.get(h) or {}
            summary_rows.append([html.escape(r.name), html.escape(r.representation), h,
                                 *(_pct(m.get(k)) for k, _ in METRICS)])
    parts = ["<h2>Summary</h2>", _table(["run", "audio images", "head", *(label for _, label in METRICS)],
                                        summary_rows, raw=True, cls="summary")]
    parts += [f'<p class="note">{html.escape(run_facts(r))}</p>' for r in runs]
    parts.append("<h2>Training curves (the paper's Fig. 6)</h2><div class=\"plots\">")
    for curve, _, title, y_title in CURVES:
        rows = [row for r in runs for row in r.curves.get(curve, [])]
        parts.append(plot(curve_spec(rows, title, y_title, several)) if rows else f"<p>{html.escape(title)}: no "
                     "curve in these runs</p>")
    parts.append("</div>")
    for r in runs:
        suffix = f" ({html.escape(r.name)})" if several else ""
        parts.append(f"<h2>Confusion matrices, test clips{suffix}</h2>")
        if r.predictions:
            parts.append('<div class="plots">' + "".join(plot(confusion_spec(r.predictions, h, c))
                                                          for h, c in zip(HEADS, COLOURS, strict=True)) + "</div>")
        parts.append(f"<h2>Test clips some head got wrong{suffix}</h2>" + _wrong_clips(r))
    parts.append("<h2>Audio-image previews (class x representation)</h2>" + _previews(runs))
    names = ", ".join(r.name for r in runs)
    note = (f"Runs: {html.escape(names)}. Written by <code>maivar report</code> from metrics/, dvclive/ and the "
            "audio-image previews; <code>dvc plots show</code> gives DVC's own page.")
    return PAGE.format(title="MAiVAR: audio, video and fusion heads", note=note, scripts=scripts,
                       body="\n".join(parts), specs=_json(specs))


def write_report(root: str | Path = ".", revs: list[str] | None = None, out: str | Path = DEFAULT_OUT,
                 workspace: bool = True) -> tuple[list[RunData], Path]:
    """Read the runs (the workspace first, unless ``workspace`` is False, then ``revs``), write the page to ``out``."""
    names = ([None] if workspace else []) + list(revs or [])
    if not names:
        raise PipelineError("no run to report: give --rev or leave out --no-workspace")
    runs = [read_run(root, rev) for rev in names]
    out = Path(out)
    write_text(out, render_page(runs, vega_scripts(root)))
    return runs, out
