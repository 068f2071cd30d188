"""Fault injection, thresholds (issue 6, part 5): a mostly-failed stage exits non-zero, so that DVC never caches
its output; the rejection lists are declared outputs; every parameter a stage reads is declared for it."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from maivar.core import rejections as R
from maivar.core.errors import PipelineError
from maivar.core.rejections import Rejection
from maivar.stage_deps import read_stages

from conftest import REPO
from stage_cmd import run_stage, stage_path

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STAGES = read_stages(REPO)  # interpolated


def test_check_rejected_share_fails_only_above_the_share():
    rejected = [Rejection(f"v{i}", R.DECODE_FAILED, "bad bytes") for i in range(3)]
    R.check_rejected_share(rejected, 6, 0.5, what="videos failed", param="x.max_rejected_share")  # 50%: ok
    with pytest.raises(PipelineError) as exc:
        R.check_rejected_share(rejected, 5, 0.5, what="videos failed", param="x.max_rejected_share")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("3 of 5 videos failed") and "x.max_rejected_share=0.5" in msg
    assert "decode_failed: 3" in msg and "v0: bad bytes" in msg and msg.endswith("check the inputs, or raise the share")


@pytest.mark.parametrize("share", [0.07, 0.1, 0.29, 0.3, 0.57, 0.58, 0.7, 1 / 3])
def test_rejected_share_is_compared_exactly_as_written(share):
    """0.29 * 100 is 28.999... in binary floating point: 29 of 100 at 0.29 must pass, 30 must fail."""
    from fractions import Fraction

    exact = Fraction(str(share))
    for total in (1, 3, 7, 100, 1000, 6837):
        limit = int(exact * total)  # the most rejections allowed
        assert not R.exceeds_share(limit, total, share), (share, total, limit)
        assert R.exceeds_share(limit + 1, total, share), (share, total, limit + 1)
    assert not R.exceeds_share(29, 100, 0.29) and R.exceeds_share(30, 100, 0.29)
    rejected = [Rejection(f"v{i}", R.DECODE_FAILED, "x") for i in range(30)]
    R.check_rejected_share(rejected[:29], 100, 0.29, what="failed", param="p")
    with pytest.raises(PipelineError, match="^30 of 100 failed"):
        R.check_rejected_share(rejected, 100, 0.29, what="failed", param="p")


def test_render_fails_without_writing_when_too_many_clips_cannot_be_rendered(tmp_path, monkeypatch):
    from maivar.audio.render import MANIFEST_COLUMNS, render_manifest
    from maivar.core.manifest import read_manifest

    from test_render_stage import EXPECTED_REJECTED, make_dataset, small_params

    manifest = make_dataset(tmp_path)  # 3 of its 8 clips cannot be rendered
    monkeypatch.chdir(tmp_path)  # audio paths in the manifest are relative to the repository root

    def render(share):
        params = {**small_params(), "max_rejected_share": share}
        return render_manifest(read_manifest(stage_path("render", "manifest"), MANIFEST_COLUMNS), representation="mfcc",
                               render_params=params, workers=2, out_path="out/images.h5",
                               previews_dir="out/previews", librosa_version="x")

    with pytest.raises(PipelineError, match=r"^3 of 8 clips could not be rendered .*render.max_rejected_share=0.3"):
        render(0.3)
    assert not Path("out/images.h5").exists() and not list(Path("out").glob(".images.h5*"))
    summary = render(len(EXPECTED_REJECTED) / len(manifest))  # exactly at the share: allowed
    assert Path("out/images.h5").is_file() and summary["rendered"] == len(manifest) - len(EXPECTED_REJECTED)


def test_extract_video_stage_exits_non_zero_when_most_videos_fail(tmp_path):
    from faults import make_avi, random_bytes, truncate
    from test_backbones import write_tiny_tsn

    work = tmp_path / "work"
    (work / "data/prepared").mkdir(parents=True)
    good = make_avi(tmp_path / "good.avi")  # 50 frames
    bad = [random_bytes(tmp_path / "noise.avi"), truncate(good, tmp_path / "cut.avi", 0.6),
           tmp_path / "absent.avi"]
    rows = [dict(id=p.stem, label=0, video_path=str(p), frames=50) for p in [good, *bad]]
    pd.DataFrame(rows).to_csv(work / "data/prepared/manifest.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract_video"].update(config=str(write_tiny_tsn(tmp_path / "tsn.py")), num_segments=3, checkpoint=None,
                                   max_rejected_share=0.5)
    params["runtime"].update(workers=2, device="cpu")
    params["runtime"]["extract_video"]["batch_videos"] = 2
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage("extract_video", work)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 3 of 4 videos could not be decoded") and "extract_video.max_rejected_share" in last
    assert "truncated: 1" in last  # the cut AVI decodes without an error: caught by the frame count
    # no output for DVC to cache; only the journal, so that a rerun with a looser threshold decodes nothing again
    assert [p.name for p in (work / "data/features").iterdir()] == ["video.h5.partial"]


def test_rejection_lists_are_declared_outputs():
    assert stage_path("prepare", "rejections") in STAGES["prepare"].outs
    for stage, option in (("render", "images"), ("extract_audio", "features"), ("extract_video", "features")):
        assert stage_path(stage, option) in STAGES[stage].outs  # each store carries its /rejected group


@pytest.mark.parametrize("stage", list(DVC))
def test_every_path_a_stage_command_names_is_a_declared_dep_or_output(stage):
    """Paths are named once, in dvc.yaml: a stage gets them from its command, and DVC tracks each of them."""
    s = STAGES[stage]
    assert s.paths, f"{stage}: its command passes no paths"
    undeclared = {k: v for k, v in s.paths.items() if k != "params" and v not in s.deps + s.outs}
    assert not undeclared, f"{stage} is given {undeclared} but dvc.yaml declares them neither as deps nor outs"


PARAM_READS = (
    re.compile(r'(?<![\w.])params\["(\w+)"\]\["(\w+)"\]'),
    re.compile(r'(?<![\w.])params\["(\w+)"\](?!\[)()'),
    re.compile(r'(?<![\w.])load_params\([^)]*\)\["(\w+)"\]()'),
    re.compile(r'(?<![\w.])params\.get\("(\w+)"\)()'),
)


# A section converted to its typed settings (maivar/settings/): ``ExtractAudioSettings.from_params(params)``.
SETTINGS_READ = re.compile(r'(?<![\w.])(\w+Settings)\.from_params\(params\b')


def settings_reads(source: str) -> set[tuple[str, str]]:
    """The sections a stage converts to typed settings, but ``runtime`` (machine settings: no stage declares
    them, so that changing them never reruns one)."""
    from maivar.settings.check import SECTIONS

    section = {kind.__name__: name for name, kind in SECTIONS.items()}
    return {(section[m.group(1)], "") for m in SETTINGS_READ.finditer(source)} - {("runtime", "")}


def declared_params(stage: str) -> set[str]:
    return {p for p in DVC[stage].get("params", []) if isinstance(p, str)}


@pytest.mark.parametrize("stage", list(DVC))
def test_every_parameter_a_stage_reads_is_declared_for_it(stage):
    source = (REPO / "stages" / f"{stage}.py").read_text()
    read = {(m.group(1), m.group(2)) for pattern in PARAM_READS for m in pattern.finditer(source)}
    read |= settings_reads(source)
    assert read, f"no parameter reads found in stages/{stage}.py"
    declared = declared_params(stage)
    missing = [f"{s}.{k}" if k else s for s, k in sorted(read) if s not in declared and f"{s}.{k}" not in declared]
    assert not missing, f"stages/{stage}.py reads {missing} but dvc.yaml does not declare them"
