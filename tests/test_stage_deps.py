"""dvc.yaml declares every module each stage imports (maivar.stage_deps), so DVC never serves a stale output."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from maivar.stage_deps import covered, missing_deps, module_closure, read_stages

REPO = Path(__file__).resolve().parents[1]
MAIVAR = Path(sys.executable).parent / "maivar"  # the console script installed beside this interpreter


def test_every_stage_declares_every_module_it_imports():
    report = missing_deps(REPO)
    assert set(report) == {"synthesize", "listing", "prepare", "render", "weights_audio", "weights_video",
                           "extract_audio", "extract_video", "train_audio", "train_video", "train_fusion", "evaluate"}
    assert report == {stage: [] for stage in report}


def _without(line: str, stage: str) -> str:
    """dvc.yaml's text with the dep ``line`` removed from ``stage`` only."""
    text = (REPO / "dvc.yaml").read_text()
    head, _, rest = text.partition(f"\n  {stage}:\n")
    body, sep, tail = rest.partition("\n\n")
    assert f"      - {line}\n" in body + "\n", f"{stage} has no dep {line}"
    body = (body + "\n").replace(f"      - {line}\n", "", 1).rstrip("\n")
    return f"{head}\n  {stage}:\n{body}{sep}{tail}"


@pytest.mark.parametrize("stage,dep,expected", [
    ("render", "maivar/audio/spectra.py", ["maivar/audio/spectra.py"]),  # a module of the stage's own job
    ("extract_video", "maivar/extraction", [  # a folder
        "maivar/extraction/__init__.py", "maivar/extraction/checkpoints.py", "maivar/extraction/data_parallel.py",
        "maivar/extraction/inference.py", "maivar/extraction/job.py", "maivar/extraction/resume.py",
        "maivar/extraction/sources.py", "maivar/extraction/weights.py"]),
    ("train_fusion", "maivar/__init__.py", ["maivar/__init__.py"]),  # the package's own __init__
    ("synthesize", "stages/synthesize.py", ["stages/synthesize.py"]),  # the entry point itself
])
def test_removing_an_imported_module_from_the_deps_is_caught(tmp_path, stage, dep, expected):
    broken = tmp_path / "dvc.yaml"
    broken.write_text(_without(dep, stage))
    report = missing_deps(REPO, str(broken))
    assert report[stage] == expected
    assert all(not paths for name, paths in report.items() if name != stage)
    proc = subprocess.run([str(MAIVAR), "check-deps", "--dvc-yaml", str(broken)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and f"{stage}: MISSING {', '.join(expected)}" in proc.stdout
    assert proc.stderr.startswith("error: 1 stage(s) import modules that dvc.yaml does not list as deps")


def test_the_cli_passes_on_the_repository_and_has_help():
    proc = subprocess.run([str(MAIVAR), "check-deps"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.count(": ok") == 12, proc.stdout + proc.stderr
    helped = subprocess.run([str(MAIVAR), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "check-deps" in helped.stdout
    module = subprocess.run([sys.executable, "-m", "maivar", "--version"], capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and module.stdout.startswith("maivar ")


def test_imports_are_followed_through_every_form(tmp_path):
    """Absolute and relative imports, ``from pkg import submodule``, and imports inside functions (lazy) are
    all followed, transitively; each package's ``__init__.py`` counts; other packages do not."""
    files = {
        "stages/s.py": "import os\nfrom maivar.a import f\n",
        "maivar/__init__.py": "",
        "maivar/a.py": "def f():\n    from .b import g\n    return g()\n",
        "maivar/b.py": "from . import c\nimport maivar.sub.d as d\nimport numpy\n",
        "maivar/c.py": "",
        "maivar/sub/__init__.py": "",
        "maivar/sub/d.py": "from ..c import x\n",
        "maivar/unused.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    closure = {str(p) for p in module_closure(tmp_path, "stages/s.py")}
    assert closure == set(files) - {"maivar/unused.py"}
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        vars:
          - code: maivar
        stages:
          s:
            cmd: python stages/s.py --out x
            deps: [stages/s.py, maivar/__init__.py, maivar/a.py, "${code}/sub"]
            outs: [x]
    """))
    assert missing_deps(tmp_path) == {"s": ["maivar/b.py", "maivar/c.py"]}


def test_imports_for_annotations_only_are_not_followed(tmp_path):
    """``if TYPE_CHECKING:`` imports never run: they make no dependency (the settings types a library function
    names in its annotations, without importing their modules at run time)."""
    files = {
        "stages/s.py": "from maivar.a import f\n",
        "maivar/__init__.py": "",
        "maivar/a.py": ("from typing import TYPE_CHECKING\nimport typing\nif TYPE_CHECKING:\n    from .b import B\n"
                        "if typing.TYPE_CHECKING:\n    import maivar.c\nelse:\n    from . import d\ndef f(): pass\n"),
        "maivar/b.py": "", "maivar/c.py": "", "maivar/d.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    closure = {str(p) for p in module_closure(tmp_path, "stages/s.py")}
    assert closure == {"stages/s.py", "maivar/__init__.py", "maivar/a.py", "maivar/d.py"}


def test_audio_code_does_not_rerun_video_stages_and_back():
    """The layout keeps the deps exact: no video stage depends on an audio module, and no audio stage on a video
    module, so a change to one branch's code reruns only that branch (and what follows it)."""
    stages = read_stages(REPO)
    audio = sorted((REPO / "maivar/audio").rglob("*.py"))
    video = sorted((REPO / "maivar/video").rglob("*.py"))
    assert audio and video
    for name in ("extract_video", "train_video"):
        assert not [p for p in audio if covered(p.relative_to(REPO), stages[name].deps)], name
    for name in ("render", "extract_audio", "train_audio"):
        assert not [p for p in video if covered(p.relative_to(REPO), stages[name].deps)], name
    # and within the audio branch: extraction code does not rerun render, drawing code does not rerun extraction
    assert not covered(Path("maivar/audio/features.py"), stages["render"].deps)
    assert not covered(Path("maivar/audio/drawing.py"), stages["extract_audio"].deps)


def test_no_parameter_is_named_size_or_nfiles():
    """DVC's run-cache leaves out every key named `size` or `nfiles` when it hashes a stage (they are file
    metadata in deps and outs, but the exclusion also hits params: treeverse/dvc#10296, fix pending in #11079):
    changing such a parameter makes `dvc repro` restore the previous run's outputs, stale. So none may exist."""
    import yaml

    def keys(node, prefix=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield f"{prefix}{key}"
                yield from keys(value, f"{prefix}{key}.")

    for path in [REPO / "params.yaml", *sorted((REPO / "presets").glob("*.yaml"))]:
        data = yaml.safe_load(path.read_text())
        blind = [k for k in keys(data) if k.split(".")[-1] in ("size", "nfiles")]
        assert not blind, f"{path.name}: {blind} would be invisible to DVC's run-cache"
