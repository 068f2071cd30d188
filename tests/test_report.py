"""The report (maivar/report.py, ``maivar report``) and DVC's own plots page, checked in a real browser.

The browser tests render the pages offline with headless Chromium (Debian package ``chromium``) and assert that
every plot is drawn and that the page logs no error or warning. They are skipped where Chromium is absent, and
fail instead when ``MAIVAR_REQUIRE_BROWSER=1`` (CI installs Chromium and sets it, see .ci/run). The report page
must not even warn; DVC's page may (its confusion template gives a Vega-Lite warning), not fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from maivar.cli import main
from maivar.evaluation import HEADS
from maivar.report import read_run, render_page, summary_table, vega_scripts, write_report

from stage_cmd import REPO, scratch_repository

# Recorded before any other script runs: every error, unhandled rejection and console error/warning, kept in the
# <html data-errors> attribute, which the dumped DOM shows.
PROBE = """<script>
(function () {
  const seen = [];
  const keep = (what) => { seen.push(String(what)); document.documentElement.setAttribute("data-errors",
                                                                                          JSON.stringify(seen)); };
  window.addEventListener("error", (e) => keep("error: " + e.message));
  window.addEventListener("unhandledrejection", (e) => keep("unhandled rejection: " + e.reason));
  for (const level of ["error", "warn"]) {
    const original = console[level];
    console[level] = (...args) => { keep(level + ": " + args.join(" ")); original.apply(console, args); };
  }
})();
</script>"""


def _chromium() -> str:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None:
        if os.environ.get("MAIVAR_REQUIRE_BROWSER") == "1":
            pytest.fail("MAIVAR_REQUIRE_BROWSER=1 but no headless Chromium is installed (apt-get install chromium)")
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    return found


def _render(page: Path, tmp_path: Path) -> str:
    """The page's DOM after Chromium has loaded it offline and run its scripts (a copy with :data:`PROBE`)."""
    probed = page.with_name(f"probed-{page.name}")
    probed.write_text(page.read_text(encoding="utf8").replace("<head>", "<head>" + PROBE, 1), encoding="utf8")
    cmd = [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=30000", "--dump-dom", probed.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-3000:]
    return proc.stdout


def _errors(dom: str) -> list[str]:
    m = re.search(r'<html[^>]*\bdata-errors="([^"]*)"', dom)
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")) if m else []


def _drawn(dom: str, ids: list[str]) -> dict[str, bool]:
    """For each element id: whether it holds a drawing (Vega's svg or canvas) before the next one's element."""
    starts = sorted((dom.find(f'id="{i}"'), i) for i in ids)
    drawn = {}
    for k, (start, i) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(dom)
        segment = dom[start:end] if start >= 0 else ""
        drawn[i] = "<svg" in segment or "<canvas" in segment
    return drawn


def _report_root(tmp_path: Path) -> Path:
    """The committed metrics/, dvclive/, dvc.yaml and the offline template, and two previews per class."""
    root = tmp_path / "repo"
    for name in ("metrics", "dvclive"):
        shutil.copytree(REPO / name, root / name)
    (root / ".dvc").mkdir(parents=True)
    shutil.copy(REPO / ".dvc/offline_plots.html", root / ".dvc/offline_plots.html")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    previews = root / "data/audio_images/previews"
    previews.mkdir(parents=True)
    classes = sorted({line.split(",")[1] for line in (root / "metrics/predictions.csv").read_text().splitlines()[1:]})
    for k, name in enumerate(classes):
        for g in (1, 2):
            Image.new("RGB", (32, 32), (40 * k % 256, 90, 30 * g)).save(previews / f"{name}__v_{name}_g0{g}_c01.png")
    return root


def test_summary_table_and_page_have_every_head_curve_matrix_and_preview(tmp_path, capsys):
    root = _report_root(tmp_path)
    assert main(["report", "--root", str(root), "-o", str(root / "report/index.html")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((root / "metrics/metrics.json").read_text())
    for head in HEADS:
        line = next(x for x in out.splitlines() if x.split()[:2] == ["workspace", head])
        assert line.split()[2:] == [f"{metrics[head][k]:.2f}" for k in ("top1", "top5", "mean_class_acc")]
    assert f"report: {root / 'report/index.html'}" in out and "dvc plots show" in out
    page = (root / "report/index.html").read_text(encoding="utf8")
    assert not re.search(r"<script[^>]*\bsrc\s*=|<link[^>]*href\s*=\s*\"http", page, re.I)  # nothing from the network
    specs = json.loads(re.search(r"const maivarSpecs = (\{.*?\});\n", page).group(1).replace("<\\/", "</"))
    assert len(specs) == 3 + 3  # Fig. 6's three curves, one confusion matrix per head
    curve = specs["plot1"]
    assert curve["encoding"]["color"]["scale"]["domain"] == list(HEADS) and "strokeDash" not in curve["encoding"]
    assert {r["head"] for r in curve["data"]["values"]} == set(HEADS)
    assert page.count("data:image/png;base64,") == 2 * 6 and "chromagram (workspace)" in page


def test_several_runs_get_a_dash_each_and_a_preview_column_each(tmp_path):
    root = _report_root(tmp_path)
    one = read_run(root)
    other = copy.deepcopy(one)
    other.name, other.metrics["representation"] = "mfcc-exp", "mfcc"
    for rows in other.curves.values():
        for r in rows:
            r["run"] = "mfcc-exp"
    page = render_page([one, other], vega_scripts(root))
    specs = json.loads(re.search(r"const maivarSpecs = (\{.*?\});\n", page).group(1).replace("<\\/", "</"))
    assert specs["plot1"]["encoding"]["strokeDash"]["field"] == "run" and len(specs) == 3 + 2 * 3
    assert "<th>chromagram (workspace)</th><th>mfcc (mfcc-exp)</th>" in page
    assert summary_table([one, other]).count("mfcc-exp") == 3 + 1


def test_report_without_metrics_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("run the pipeline (dvc repro) first")


# ---------------------------------------------------------------------------------------- in a real browser
def test_report_page_draws_every_plot_in_headless_chromium_without_a_console_error(tmp_path):
    _chromium()
    root = _report_root(tmp_path)
    runs, page = write_report(root, out=root / "report/index.html")
    two = render_page([*runs, copy.deepcopy(runs[0])], vega_scripts(root))  # also the several-runs layout
    (root / "report/two.html").write_text(two, encoding="utf8")
    for name, plots in (("index.html", 6), ("two.html", 9)):
        dom = _render(root / "report" / name, tmp_path)
        assert _errors(dom) == [], name
        assert re.search(r'<body[^>]*data-plots="drawn"', dom), name
        ids = re.findall(r'<div class="plot[^"]*" id="(plot\d+)"', dom)
        assert len(ids) == plots and all(_drawn(dom, ids).values()), (name, _drawn(dom, ids))
        assert dom.count('<img src="data:image/png;base64,') == 12 * (1 if name == "index.html" else 2)


def test_dvc_plots_show_page_draws_every_plot_in_headless_chromium(tmp_path):
    _chromium()
    repo, env = scratch_repository(tmp_path / "repo")
    proc = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", "out"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = repo / "out/index.html"
    ids = re.findall(r"vegaEmbed\('#([^']+)'", page.read_text(encoding="utf8"))
    assert {"fig6_test_accuracy", "fig6_train_loss", "fig6_train_accuracy"} <= set(ids)
    dom = _render(page, tmp_path)
    # errors only: DVC's own confusion template makes Vega-Lite warn (an empty "row" channel)
    assert [e for e in _errors(dom) if not e.startswith("warn: ")] == []
    assert all(_drawn(dom, ids).values()), _drawn(dom, ids)
    spec = json.loads(subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=repo, env=env,
                                     capture_output=True, text=True, timeout=300).stdout)
    fig6 = spec["data"]["fig6_test_accuracy"][0]["content"]
    assert fig6["encoding"]["color"]["field"] == "head" and fig6["encoding"]["x"]["title"] == "epoch"
    assert "'audio'" in fig6["transform"][0]["calculate"]
