"""Fault injection, thresholds (issue 6, part 5): a mostly-failed stage exits non-zero, so that DVC never caches
its output; the rejection lists are declared outputs; every parameter a stage reads is declared for it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from maivar import rejections as R
from maivar.errors import PipelineError
from maivar.feature_store import Rejection

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_check_rejected_share_fails_only_above_the_share():
    rejected = [Rejection(f"v{i}", R.DECODE_FAILED, "bad bytes") for i in range(3)]
    R.check_rejected_share(3, 6, 0.5, rejected, what="videos failed", param="x.max_rejected_share")  # 50%: ok
    with pytest.raises(PipelineError) as exc:
        R.check_rejected_share(3, 5, 0.5, rejected, what="videos failed", param="x.max_rejected_share")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("3 of 5 videos failed") and "x.max_rejected_share=0.5" in msg
    assert "decode_failed: 3" in msg and "v0: bad bytes" in msg


def test_render_fails_without_writing_when_too_many_clips_cannot_be_rendered(tmp_path, monkeypatch):
    from maivar.render_stage import read_manifest, render_manifest
    from test_render_stage import EXPECTED_REJECTED, make_dataset, small_params

    manifest = make_dataset(tmp_path)  # 3 of its 8 clips cannot be rendered
    monkeypatch.chdir(tmp_path)  # audio paths in the manifest are relative to the repository root

    def render(share):
        params = {**small_params(), "max_rejected_share": share}
        return render_manifest(read_manifest("data/prepared/manifest.csv"), representation="mfcc",
                               render_params=params, workers=2, out_path="out/images.h5",
                               previews_dir="out/previews", librosa_version="x")

    with pytest.raises(PipelineError, match=r"^3 of 8 clips could not be rendered .*render.max_rejected_share=0.3"):
        render(0.3)
    assert not Path("out/images.h5").exists() and not list(Path("out").glob(".images.h5*"))
    summary = render(len(EXPECTED_REJECTED) / len(manifest))  # exactly at the share: allowed
    assert Path("out/images.h5").is_file() and summary["rendered"] == len(manifest) - len(EXPECTED_REJECTED)


def test_extract_video_stage_exits_non_zero_when_most_videos_fail(tmp_path):
    from test_backbones import write_tiny_tsn
    from faults import make_avi, random_bytes, truncate

    work = tmp_path / "work"
    (work / "data/prepared").mkdir(parents=True)
    good = make_avi(tmp_path / "good.avi")  # 50 frames
    bad = [random_bytes(tmp_path / "noise.avi"), truncate(good, tmp_path / "cut.avi", 0.6),
           tmp_path / "absent.avi"]
    rows = [dict(id=p.stem, label=0, video_path=str(p), frames=50) for p in [good, *bad]]
    pd.DataFrame(rows).to_csv(work / "data/prepared/manifest.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract_video"].update(config=str(write_tiny_tsn(tmp_path / "tsn.py")), num_segments=3, batch_videos=2,
                                   workers=2, device="cpu", checkpoint=None, max_rejected_share=0.5)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(REPO / "stages/extract_video.py")], cwd=work, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 3 of 4 videos could not be decoded") and "extract_video.max_rejected_share" in last
    assert "truncated: 1" in last  # the cut AVI decodes without an error: caught by the frame count
    # no output for DVC to cache; only the journal, so that a rerun with a looser threshold decodes nothing again
    assert [p.name for p in (work / "data/features").iterdir()] == ["video.h5.partial"]


def test_rejection_lists_are_declared_outputs():
    assert "data/prepared/rejections.csv" in DVC["prepare"]["outs"]
    for stage, store in (("render", "data/audio_images/images.h5"), ("extract_audio", "data/features/audio.h5"),
                         ("extract_video", "data/features/video.h5")):
        assert store in DVC[stage]["outs"]  # each store carries its /rejected group


PARAM_READS = (
    re.compile(r'(?<![\w.])params\["(\w+)"\]\["(\w+)"\]'),
    re.compile(r'(?<![\w.])params\["(\w+)"\](?!\[)()'),
    re.compile(r'(?<![\w.])load_params\([^)]*\)\["(\w+)"\]()'),
    re.compile(r'(?<![\w.])params\.get\("(\w+)"\)()'),
)


def declared_params(stage: str) -> set[str]:
    return {p for p in DVC[stage].get("params", []) if isinstance(p, str)}


@pytest.mark.parametrize("stage", list(DVC))
def test_every_parameter_a_stage_reads_is_declared_for_it(stage):
    source = (REPO / "stages" / f"{stage}.py").read_text()
    read = {(m.group(1), m.group(2)) for pattern in PARAM_READS for m in pattern.finditer(source)}
    assert read, f"no parameter reads found in stages/{stage}.py"
    declared = declared_params(stage)
    missing = [f"{s}.{k}" if k else s for s, k in sorted(read) if s not in declared and f"{s}.{k}" not in declared]
    assert not missing, f"stages/{stage}.py reads {missing} but dvc.yaml does not declare them"
