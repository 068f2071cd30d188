"""Fault injection, killed stages (issue 6, part 4): SIGKILL and SIGTERM to a stage while it writes.

Each stage runs as a subprocess in a scratch directory on a tiny input, as ``dvc repro`` runs it. The run is
killed while an output is being written (its temporary sibling exists). Then:

- the final output is absent (first run) or the previous complete version, never a half-written file;
- SIGTERM: the stage exits 143 and removes its temporaries; SIGKILL: the temporary stays until the next run
  of the stage removes it;
- the rerun's outputs are byte-identical to those of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from maivar.core.atomic import TMP_MARK
from maivar.core.feature_store import open_store

from conftest import REPO
from stage_cmd import ALWAYS_BEFORE, run_stage_in_process, stage_argv, stage_path

OUTPUTS = {  # each stage's outputs, as its dvc.yaml command names them
    "prepare": [stage_path("prepare", o) for o in ("manifest", "rejections", "audio", "metrics")],
    "render": [stage_path("render", o) for o in ("images", "previews")],
    "extract_audio": [stage_path("extract_audio", "features")],
    "extract_video": [stage_path("extract_video", "features")],
}
# Where each stage is killed: the temporary of this output exists (and, for a directory, holds a file).
WRITING = {"prepare": stage_path("prepare", "audio"), "render": stage_path("render", "images"),
           "extract_audio": stage_path("extract_audio", "features"),
           "extract_video": stage_path("extract_video", "features")}
# Writes take well under a second on this tiny input, so a wrapper holds the stage inside the write: the
# signal then lands while the output's temporary is half-written (prepare: some WAVs demuxed into the
# temporary folder, the workers held; stores: rows written, ``complete`` not yet set, file not yet renamed).
HOLD = """import os, runpy, sys, time
from maivar.core import feature_store
from maivar.data import subset
real_finish, real_examine = feature_store.StoreWriter.finish, subset.examine_video
def held_finish(self, *a, **k):
    time.sleep(3600)
    real_finish(self, *a, **k)
def held_examine(task):
    result = real_examine(task)  # it passed (a rejected video raises): its WAV is in the temporary folder
    stage = os.getppid()
    while os.getppid() == stage:  # hold until the stage is gone
        time.sleep(0.05)
    return result
feature_store.StoreWriter.finish = held_finish
subset.examine_video = held_examine
sys.argv = {argv!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(c) for c in text.split()]
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def digest(path: Path) -> str | None:
    """sha256 over a file, or over a directory's relative names and bytes; None when absent."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path)).encode() if path.is_dir() else b"")
        h.update(f.read_bytes())
    return h.hexdigest()


def outputs(work: Path, stage: str) -> dict[str, str | None]:
    return {rel: digest(work / rel) for rel in OUTPUTS[stage]}


def temporaries(work: Path, stage: str) -> list[Path]:
    return sorted(p for rel in OUTPUTS[stage] for p in (work / rel).parent.glob(f".{Path(rel).name}{TMP_MARK}*"))


def run(work: Path, stage: str) -> None:
    """An uninterrupted run, in this process (only the killed runs need a process of their own)."""
    assert run_stage_in_process(stage, work) == 0


def kill_mid_write(work: Path, stage: str, sig: int) -> int:
    """Start ``stage``, send ``sig`` once its output's temporary is being written; return the exit code. (The
    always-changed stage before it, weights_*, runs first, in this process, as `dvc repro STAGE` runs it.)"""
    if stage in ALWAYS_BEFORE:
        assert run_stage_in_process(ALWAYS_BEFORE[stage], work) == 0
    wrapper = work / "held_stage.py"
    wrapper.write_text(HOLD.format(argv=stage_argv(stage)[1:]))
    cmd = [sys.executable, str(wrapper)]
    final = work / WRITING[stage]
    proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            tmps = list(final.parent.glob(f".{final.name}{TMP_MARK}*")) if final.parent.is_dir() else []
            if tmps and (tmps[0].is_file() or any(tmps[0].glob("*.wav"))):
                break
            assert proc.poll() is None, f"{stage} ended before it was killed: {proc.stderr.read()[-2000:]}"
            time.sleep(0.01)
        else:
            pytest.fail(f"{stage} never started writing {final}")
        time.sleep(0.2)  # well inside the write
        workers = children(proc.pid)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        # No orphans: the stage's worker processes end with it, also after SIGKILL.
        deadline = time.monotonic() + 15
        while [w for w in workers if alive(w)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if alive(w)], f"{stage}: worker processes outlived the stage"
        return code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_kills(work: Path, stage: str, *, first_run_killed: bool = True) -> dict[str, str | None]:
    """SIGKILL (on the first run when ``first_run_killed``), rerun, SIGTERM, rerun; returns the outputs' digests."""
    if first_run_killed:
        assert all(v is None for v in outputs(work, stage).values())
        assert kill_mid_write(work, stage, signal.SIGKILL) == -signal.SIGKILL
        # No half-written output, only a temporary that the next run removes.
        assert outputs(work, stage)[WRITING[stage]] is None
        assert temporaries(work, stage)
        run(work, stage)
    done = outputs(work, stage)
    assert all(done.values()) and not temporaries(work, stage)
    assert kill_mid_write(work, stage, signal.SIGTERM) == 128 + signal.SIGTERM
    assert outputs(work, stage) == done  # the previous complete version, untouched
    assert not temporaries(work, stage)  # SIGTERM cleans up
    assert kill_mid_write(work, stage, signal.SIGKILL) == -signal.SIGKILL
    assert outputs(work, stage) == done
    run(work, stage)
    assert outputs(work, stage) == done and not temporaries(work, stage)  # rerun: byte-identical
    return done


@pytest.fixture(scope="module")
def workdirs(tiny_dataset, tmp_path_factory):
    """Two scratch repositories on the same tiny dataset: ``killed`` (faults injected) and ``clean``."""
    from test_backbones import write_tiny_tsn

    root, _ = tiny_dataset
    base = tmp_path_factory.mktemp("killed")
    config = write_tiny_tsn(base / "tsn.py")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"]["root"] = str(root)
    params["prepare"].update(timeout_s=60)
    params["render"].update(image_size=32, sample_rate=16000, previews_per_class=1)
    params["extract_audio"].update(backbone="resnet18", input_size=32, pretrained=False, checkpoint=None)
    params["extract_video"].update(config=str(config), num_segments=3, checkpoint=None, timeout_s=60)
    params["runtime"].update(workers=2, device="cpu")
    params["runtime"]["extract_audio"]["batch_size"] = 4
    params["runtime"]["extract_video"]["batch_videos"] = 2
    dirs = {}
    for name in ("killed", "clean"):
        dirs[name] = base / name
        dirs[name].mkdir()
        (dirs[name] / "params.yaml").write_text(yaml.safe_dump(params))
    return dirs


STAGES = ("prepare", "render", "extract_audio", "extract_video")


# The extraction stages start torch/timm/MMAction2 in each killed process (~5 s apiece on 2 cores): slow.
@pytest.mark.parametrize("stage", [s if s in ("prepare", "render") else pytest.param(s, marks=pytest.mark.slow)
                                   for s in STAGES])
def test_killed_stage_leaves_previous_output_and_reruns_to_identical_bytes(workdirs, stage):
    killed, clean = workdirs["killed"], workdirs["clean"]
    for before in STAGES[: STAGES.index(stage)]:  # the inputs, from uninterrupted runs
        for work in (killed, clean):
            if not all(outputs(work, before).values()):
                run(work, before)
    after_faults = check_kills(killed, stage)
    run(clean, stage)
    assert outputs(clean, stage) == after_faults  # the same bytes as a run that was never interrupted
    for rel in OUTPUTS[stage]:
        if rel.endswith(".h5"):
            store = open_store(killed / rel, "images" if "audio_images" in rel else "features", load_data=False)
            assert store.ids and store.attrs["complete"]
