"""Metrics (maivar/evaluation.py)."""

import csv
import io
import math

import numpy as np

from maivar.evaluation import (
    confusion_csv,
    head_metrics,
    mean_class_accuracy,
    per_class_accuracy,
    per_class_csv,
    predictions,
    predictions_csv,
    probabilities,
    probability_text,
    ranked,
    topk_accuracy,
)


def test_topk_accuracy_counts_the_label_among_the_k_best():
    logits = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    y = np.array([0, 0, 1, 2])
    assert topk_accuracy(logits, y, 1) == 50.0
    assert topk_accuracy(logits, y, 2) == 100.0 * 3 / 4
    assert topk_accuracy(logits, y, 5) == 100.0  # k is capped at the number of classes
    assert math.isnan(topk_accuracy(logits[:0], y[:0], 1))


def test_ties_are_broken_by_the_lower_label():
    logits = np.zeros((2, 3))
    assert predictions(logits).tolist() == [0, 0]
    assert topk_accuracy(logits, np.array([0, 1]), 1) == 50.0


def test_mean_class_accuracy_weights_classes_equally_and_skips_empty_ones():
    y = np.array([0, 0, 0, 1])
    pred = np.array([0, 0, 0, 0])
    acc = per_class_accuracy(pred, y, 3)
    assert acc[0] == 100.0 and acc[1] == 0.0 and math.isnan(acc[2])
    assert mean_class_accuracy(pred, y, 3) == 50.0  # top-1 would be 75


def test_head_metrics_keys_and_rounding():
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    m = head_metrics(logits, np.array([0, 1, 1]), 2)
    assert list(m) == ["top1", "top5", "mean_class_acc"]
    assert m["top1"] == round(200 / 3, 4) and m["top5"] == 100.0 and m["mean_class_acc"] == 75.0


def test_per_class_csv_has_one_row_per_class_and_blank_without_test_clips():
    y = np.array([0, 0, 1])
    logits = {"audio": np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]]), "fusion": np.eye(3)[[0, 0, 1]]}
    rows = list(csv.DictReader(io.StringIO(per_class_csv(y, logits, ["A", "B", "C"]))))
    assert [r["class_name"] for r in rows] == ["A", "B", "C"]
    assert rows[0]["audio_acc"] == "50" and rows[0]["fusion_acc"] == "100"
    assert rows[2]["test_clips"] == "0" and rows[2]["audio_acc"] == ""


def test_confusion_csv_rows_sorted_by_id_with_class_names():
    text = confusion_csv(["b", "a"], np.array([1, 0]), np.array([0, 0]), ["X", "Y"])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows == [{"id": "a", "actual": "X", "predicted": "X"}, {"id": "b", "actual": "Y", "predicted": "X"}]


def test_ranked_orders_by_logit_with_ties_to_the_lower_label_and_gives_softmax_probabilities():
    logits = np.array([[0.0, 2.0, 2.0, -1.0], [3.0, 1.0, 0.0, 0.0]], dtype=np.float32)
    labels, probs = ranked(logits, 3)
    assert labels.tolist() == [[1, 2, 0], [0, 1, 2]]
    p = probabilities(logits)
    assert np.allclose(p.sum(axis=1), 1.0) and p.dtype == np.float64
    assert np.array_equal(probs, np.take_along_axis(p, labels, axis=1))
    assert labels[:, 0].tolist() == predictions(logits).tolist()  # top-1 is the accuracies' prediction
    assert ranked(logits, 10)[0].shape == (2, 4)  # k is capped at the number of classes
    assert probability_text(probs[1, 0]) == f"{np.exp(3) / (np.exp(3) + np.exp(1) + 2):.4f}"


def test_predictions_csv_has_one_row_per_test_clip_with_each_heads_class_and_probability():
    logits = {"audio": np.array([[2.0, 0.0], [0.0, 0.0]]), "video": np.array([[0.0, 1.0], [0.0, 5.0]]),
              "fusion": np.array([[1.0, 1.0], [-1.0, 1.0]])}
    rows = list(csv.DictReader(io.StringIO(predictions_csv(["b", "a"], np.array([0, 1]), logits, ["X", "Y"]))))
    assert list(rows[0]) == ["id", "label", "audio_pred", "video_pred", "fusion_pred", "audio_prob", "video_prob",
                             "fusion_prob"]
    assert rows[0] == {"id": "a", "label": "Y", "audio_pred": "X", "video_pred": "Y", "fusion_pred": "Y",
                       "audio_prob": "0.5000", "video_prob": f"{1 / (1 + np.exp(-5)):.4f}",
                       "fusion_prob": f"{1 / (1 + np.exp(-2)):.4f}"}
    assert rows[1]["id"] == "b" and rows[1]["fusion_pred"] == "X" and rows[1]["fusion_prob"] == "0.5000"


# ---------------------------------------------------------------------------- Table II and plots
def _load_script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exp(name, representation, audio, fusion, video=75.0, init="video"):
    return {"rev": "0" * 40, "name": name, "data": {
        "params": {"params.yaml": {"data": {"representation": representation, "fusion_mlp": {"init": init},
                                            "extract_audio": {"backbone": "resnet18"}}}},
        "metrics": {"metrics/metrics.json": {"data": {"audio": {"top1": audio}, "video": {"top1": video},
                                                      "fusion": {"top1": fusion}}}}}}


def test_table2_rows_follow_the_paper_order_and_mark_the_best():
    table2 = _load_script("table2")
    base = _exp("main", "chromagram", 15.48, 87.91)
    base["experiments"] = [{"name": "e1", "revs": [_exp("e1", "waveplot", 12.08, 86.21)]},
                           {"name": "e2", "revs": [_exp("e2", "mfcc_scaled", 17.43, 86.11)]},
                           {"name": "e4", "revs": [_exp("e4", "melspectrogram", 14.0, 85.0)]},  # ours: after the six
                           {"name": "e3", "revs": [{"rev": "1" * 40, "name": "e3", "data": {"metrics": {}}}]}]
    workspace = {**_exp(None, "chromagram", 1.0, 1.0), "rev": "workspace"}
    rows = table2.table_rows([workspace, base])
    # no workspace, no metrics-less run
    assert [r["key"] for r in rows] == ["waveplot", "mfcc_scaled", "chromagram", "melspectrogram"]
    text = table2.format_table(rows)
    assert "| MFCCs Feature Scaling | **17.43** | 86.11 | e2 |" in text
    assert "| Chromagram | 15.48 | **87.91** | main |" in text
    assert text.index("| Chromagram |") < text.index("| Mel spectrogram | 14.00 | 85.00 | e4 |")
    assert "Video-only accuracy is 75.00%" in text
    assert [r["key"] for r in table2.table_rows([base], by="backbone")] == ["resnet18"] * 4
    assert len(table2.table_rows([workspace, base], workspace=True)) == 5


def test_table2_compare_prints_the_two_presets_side_by_side(tmp_path):
    """`--compare`: per representation, the paper preset's run beside paper_corrected's and the paper's Table II,
    from `dvc exp show --json`-shaped input; other runs are left out."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    table2 = _load_script("table2")
    base = _exp("main", "chromagram", 1.0, 2.0)  # the baseline: in neither preset
    base["experiments"] = [
        {"name": n, "revs": [_exp(n, rep, a, f)]} for n, rep, a, f in (
            ("paper_corrected-waveplot", "waveplot", 20.5, 80.25), ("paper-waveplot", "waveplot", 11.0, 85.0),
            ("paper-chromagram", "chromagram", 15.0, 87.0), ("other-mfcc", "mfcc", 9.0, 9.0))]
    slots = table2.compare_rows(table2.table_rows([base]), ["paper", "paper_corrected"])
    assert [s["key"] for s in slots] == ["waveplot", "chromagram"]
    text = table2.format_compare(slots, ["paper", "paper_corrected"])
    assert text.splitlines()[0] == ("| Representation | Paper: Audio | Paper: Fusion | paper: Audio | paper: Fusion "
                                    "| paper_corrected: Audio | paper_corrected: Fusion |")
    assert "| Waveplot | 12.08 | 86.21 | 11.00 | 85.00 | 20.50 | 80.25 |" in text
    assert "| Chromagram | 15.48 | 87.91 | 15.00 | 87.00 | - | - |" in text
    assert "MFCC" not in text and "| 1.00 |" not in text and "9.00" not in text and "main" not in text
    base["experiments"].append({"name": "paper-x", "revs": [_exp("paper-x", "waveplot", 1.0, 1.0)]})
    with pytest.raises(ValueError, match="two runs of paper show waveplot: paper-waveplot and paper-x"):
        table2.compare_rows(table2.table_rows([base]), ["paper", "paper_corrected"])
    exps = tmp_path / "exps.json"
    exps.write_text(json.dumps([base]))
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "table2.py")
    proc = subprocess.run([sys.executable, script, "--json", str(exps), "--compare"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: two runs of paper show waveplot")
    base["experiments"].pop()
    exps.write_text(json.dumps([base]))
    proc = subprocess.run([sys.executable, script, "--json", str(exps), "--compare"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == text + "\n"


def test_offline_plots_template_has_no_network_scripts():
    import re
    from pathlib import Path

    template = (Path(__file__).resolve().parents[1] / ".dvc" / "offline_plots.html").read_text(encoding="utf8")
    assert template.count("{plot_divs}") == 1
    assert "{scripts}" not in template  # DVC puts its CDN <script src=...> tags there
    assert not re.search(r"<script[^>]*\bsrc\s*=", template, re.I)
    for lib in ("vega", "vega-lite", "vega-embed"):
        assert f"<!-- {lib} " in template
    assert "vegaEmbed=" in template and "vegaLite=" in template


def test_dvc_plots_show_with_the_template_loads_nothing_from_the_network(tmp_path):
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    dvc = [sys.executable, "-m", "dvc"]
    env = {"DVC_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env, timeout=120)
    shutil.copy(repo / ".dvc" / "offline_plots.html", tmp_path / ".dvc" / "offline_plots.html")
    subprocess.run([*dvc, "config", "plots.html_template", "offline_plots.html"], cwd=tmp_path, check=True, env=env,
                   timeout=120)
    (tmp_path / "acc.tsv").write_text("step\tacc\n0\t10\n1\t30\n2\t50\n")
    (tmp_path / "dvc.yaml").write_text("plots:\n  - acc.tsv:\n      x: step\n      y: acc\n")
    subprocess.run([*dvc, "plots", "show", "-o", "out"], cwd=tmp_path, check=True, env=env, capture_output=True,
                   timeout=120)
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf8")
    assert "vegaEmbed('#acc_tsv'" in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert "cdn.jsdelivr" not in html
