"""Data-parallel extraction (issue 11): blocks shared among ranks, the same store for any number of processes,
a killed rank resumed, and a two-launch "multi-node" torchrun run assembled by a plain run of the stage.

On a CPU the features' last bits depend on the threads a process runs (convolutions sum in another order),
so the byte-for-byte comparisons give every process one thread (``runtime.threads: 1``)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from maivar.core import rejections
from maivar.core.errors import PipelineError
from maivar.core.feature_store import open_store
from maivar.extraction.data_parallel import JobSpec, World, rank_blocks, rank_summary, rank_todo, run_extraction
from maivar.extraction.resume import BATCHES_PER_BLOCK, Journal, blocks
from maivar.settings.base import SettingsError
from maivar.settings.runtime import RuntimeSettings

from conftest import REPO as ROOT
from stage_cmd import run_stage_in_process, stage_argv, stage_path
from test_audio_features import _stage_dir as audio_stage_dir
from test_audio_features import images
from test_video_features import _clips
from test_video_features import _stage_dir as video_stage_dir

AUDIO_OUT = stage_path("extract_audio", "features")
VIDEO_OUT = stage_path("extract_video", "features")


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def set_runtime(work, **runtime):
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["runtime"].update(runtime)
    (work / "params.yaml").write_text(yaml.safe_dump(params))


# --------------------------------------------------------------------------------------------- the layout


def test_blocks_are_whole_batches_and_ranks_take_them_in_turn():
    spans = blocks(37, 2)
    assert [(s.start, s.stop) for s in spans] == [(0, 16), (16, 32), (32, 37)] and BATCHES_PER_BLOCK == 8
    assert blocks(0, 4) == []
    assert rank_blocks(spans, World(0, 2)) == [spans[0], spans[2]]
    assert rank_blocks(spans, World(1, 2)) == [spans[1]]
    assert rank_blocks(spans, World(0, 1)) == spans


def _runtime(**values) -> RuntimeSettings:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runtime"].update(values)
    return RuntimeSettings.from_params(params)


def test_runtime_processes_must_be_a_positive_integer():
    assert _runtime(processes=4).processes == 4
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(SettingsError, match=r"^params.yaml runtime.processes: .* is not allowed \(an integer "):
            _runtime(processes=bad)


def test_journal_todo_and_collect_work_block_by_block(tmp_path):
    j = Journal(tmp_path / "out.h5", {"k": 1}, every_s=0.0, device="cpu")
    spans = blocks(20, 2)  # two blocks: [0, 16) and a short last one [16, 20)
    j.add(0, 4, [0, 1, 2, 3], np.ones((4, 2)), [])
    j.add(16, 20, [16, 18, 19], np.zeros((3, 2)), [rejections.Rejection("v17", rejections.DECODE_FAILED, "x")])
    assert j.todo(spans) == [range(4, 16)]  # the second block is done; the first from input 4 on
    done, unfinished = j.collect(spans)
    assert unfinished == [spans[0]] and done.rows == [0, 1, 2, 3, 16, 18, 19] and done.devices == {"cpu"}
    # a chunk that cannot be read ends its block's prefix and is removed, so that a rerun computes it again
    (j.dir / "chunk-16-20.npz").write_bytes(b"damaged")
    assert j.collect(spans)[1] == spans and j.todo(spans) == [range(4, 16), range(16, 20)]


# --------------------------------------------------------------------------------------------- audio


@pytest.fixture
def audio_work(tmp_path):
    """40 images: 3 blocks of batch 2 (16, 16, 8)."""
    work = audio_stage_dir(tmp_path, images(40, seed=5), [f"v{i:02d}" for i in range(40)], [i % 3 for i in range(40)],
                           [])
    set_runtime(work, threads=1)
    return work


def test_extract_audio_with_two_processes_gives_the_one_process_store_byte_for_byte(audio_work, caplog):
    assert run_stage_in_process("extract_audio", audio_work) == 0
    one = md5(audio_work / AUDIO_OUT)
    (audio_work / AUDIO_OUT).unlink()
    set_runtime(audio_work, processes=2)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_stage_in_process("extract_audio", audio_work) == 0
    assert "data parallel: 2 processes on this machine (world size 2)" in caplog.text
    assert md5(audio_work / AUDIO_OUT) == one
    assert not (audio_work / f"{AUDIO_OUT}.partial").exists()  # the journal is gone once the store is in place


def test_extract_audio_with_two_processes_and_all_cores_each_is_close_to_one_process(audio_work):
    """Default threads (the cores shared out): the same ids, features equal to float32 rounding."""
    set_runtime(audio_work, threads=0)
    assert run_stage_in_process("extract_audio", audio_work) == 0
    one = open_store(audio_work / AUDIO_OUT, "features")
    (audio_work / AUDIO_OUT).unlink()
    set_runtime(audio_work, processes=2)
    assert run_stage_in_process("extract_audio", audio_work) == 0
    two = open_store(audio_work / AUDIO_OUT, "features")
    assert two.ids == one.ids and two.attrs == one.attrs
    np.testing.assert_allclose(two.data, one.data, rtol=1e-5, atol=1e-6)


# Rank 1 SIGKILLs itself right after journaling its first block (the ranks are forked from this wrapper, so
# they carry the patch); rank 0 is then stopped by the launcher.
KILL_RANK_1 = """import os, runpy, signal, sys
from maivar.extraction import resume
real_write = resume.Journal.write
def write(self):
    had = bool(self._pending)
    real_write(self)
    if had and os.environ.get("RANK") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
resume.Journal.write = write
sys.argv = {argv!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_killed_rank_fails_the_stage_in_one_line_and_the_rerun_computes_only_the_rest(audio_work, tmp_path,
                                                                                        caplog):
    assert run_stage_in_process("extract_audio", audio_work) == 0
    one = md5(audio_work / AUDIO_OUT)
    (audio_work / AUDIO_OUT).unlink()
    set_runtime(audio_work, processes=2)
    wrapper = tmp_path / "kill_rank_1.py"
    argv = stage_argv("extract_audio")
    wrapper.write_text(KILL_RANK_1.format(argv=argv[1:]))
    proc = subprocess.run([sys.executable, str(wrapper)], cwd=audio_work, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, env={**os.environ, "MAIVAR_START_METHOD": "fork"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error == ["error: rank 1 of 2 failed (killed by SIGKILL); what the ranks finished is journaled: rerun to "
                     "compute only the rest"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (audio_work / AUDIO_OUT).exists()
    chunks = sorted(p.name for p in (audio_work / f"{AUDIO_OUT}.partial").rglob("chunk-*.npz"))
    assert "chunk-16-32.npz" in chunks  # rank 1's block, journaled before it was killed
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_stage_in_process("extract_audio", audio_work) == 0
    assert "the 2 ranks computed " in caplog.text and "of the 3 blocks; the others were journaled" in caplog.text
    assert md5(audio_work / AUDIO_OUT) == one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_launches_fill_the_journal_and_a_plain_run_assembles_without_computing(audio_work, caplog):
    """The multi-node recipe of docs/SCALING.md on one machine: two "nodes" (torchrun --nnodes 2, node ranks 0
    and 1, one process each) run the stage script; they write no output, only the journal; the stage as
    `dvc repro` runs it then finds every block done and assembles the store of a one-process run."""
    assert run_stage_in_process("extract_audio", audio_work) == 0
    one = md5(audio_work / AUDIO_OUT)
    (audio_work / AUDIO_OUT).unlink()
    argv = stage_argv("extract_audio")
    port = _free_port()
    launches = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
         "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port), *argv[1:]],
        cwd=audio_work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        for node in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in launches]
    assert [p.returncode for p in launches] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert "rank 0 computed 2 of its 2 blocks" in outputs[0] and "rank 1 computed 1 of its 1 blocks" in outputs[0]
    assert "world size 2" in outputs[1] and "`dvc repro` assembles" in outputs[1]
    assert not (audio_work / AUDIO_OUT).exists()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_stage_in_process("extract_audio", audio_work) == 0
    assert "resuming: 40 of 40 images were done by an interrupted run" in caplog.text
    assert md5(audio_work / AUDIO_OUT) == one


# --------------------------------------------------------------------------------------------- video


def test_extract_video_with_two_processes_gives_the_one_process_store_byte_for_byte(tiny_tsn, tmp_path, caplog):
    """18 videos (3 blocks of 8, 8, 2 at batch_videos 1), one that does not decode in the second block: the
    same rows, rejections and bytes as one process."""
    _, _, config = tiny_tsn
    a, b, bad, c = _clips(tmp_path)
    clips = []
    for i in range(18):
        src = bad if i == 11 else (a, b, c)[i % 3]
        path = tmp_path / f"v{i:02d}.avi"
        shutil.copy(src.path, path)
        clips.append(dict(id=f"v{i:02d}", label=i % 2, video_path=str(path), frames=src.expected_frames))
    work = video_stage_dir(tmp_path, config, clips)
    set_runtime(work, threads=1, workers=1)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["runtime"]["extract_video"].update(batch_videos=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage_in_process("extract_video", work) == 0
    one = md5(work / VIDEO_OUT)
    store = open_store(work / VIDEO_OUT, "features", load_data=False)
    assert [(r.id, r.reason) for r in store.rejected] == [("v11", rejections.DECODE_FAILED)] and len(store.ids) == 17
    (work / VIDEO_OUT).unlink()
    set_runtime(work, processes=2)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_stage_in_process("extract_video", work) == 0
    assert "world size 2" in caplog.text
    assert md5(work / VIDEO_OUT) == one


def test_each_rank_takes_its_own_gpu_and_more_processes_than_gpus_is_an_error(monkeypatch):
    import torch

    from maivar.core.errors import PipelineError
    from maivar.extraction.data_parallel import rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda = torch.device("cuda")
    assert rank_device(cuda, World(3, 4, 1, 2, launched=True)) == torch.device("cuda", 1)
    assert rank_device(cuda, World()) == cuda and rank_device(torch.device("cpu"), World(1, 2, 1, 2)).type == "cpu"
    with pytest.raises(PipelineError, match="3 processes on this machine but 2 GPU"):
        rank_device(cuda, World(0, 3, 0, 3, launched=True))


def test_stage_cmd_prints_what_torchrun_takes(capsys):
    """docs/SCALING.md's multi-node command takes the stage's script and paths from `maivar stage-cmd --script`
    (each path is named once, in dvc.yaml)."""
    from maivar.cli import main

    assert main(["stage-cmd", "--script", "extract_video", "--root", str(ROOT)]) == 0
    words = capsys.readouterr().out.split()
    argv = stage_argv("extract_video")
    assert words == [os.path.relpath(argv[1], ROOT), *argv[2:]]
    assert main(["stage-cmd", "no_such_stage", "--root", str(ROOT)]) == 2
    assert capsys.readouterr().err.startswith("error: no stage 'no_such_stage' in dvc.yaml (stages: synthesize,")


# ------------------------------------------------------------------------------- the runner, on a toy stage


class _ToyJob:
    """Squares of 0..n-1 in blocks (of 8 batches of 1), journaled; ``damage``: chunks made unreadable right after
    the first ``fill`` (a disk error between computing and assembling)."""

    what = "squares"

    def __init__(self, out, n, damage):
        self.device, self.spans, self.damage, self.fills = "cpu", blocks(n, 1), damage, 0
        self.journal = Journal(out, {"toy": n}, every_s=0.0)

    def fill(self, world, threads):
        mine, todo = rank_todo(self.journal, self.spans, world, "squares")
        for span in todo:
            rows = list(span)
            self.journal.add(span.start, span.stop, rows, np.array([[r * r] for r in rows], dtype=np.float32), [])
        self.journal.write()
        self.fills += 1
        if self.damage and (self.fills == 1 or self.damage == "always"):
            for chunk in sorted(self.journal.dir.glob("chunk-*"))[:1]:
                chunk.write_bytes(b"not a chunk")
        return rank_summary(world, mine, todo, self.device, threads, rejected=0)

    def assemble(self, out, done):
        self.assembled = (list(done.rows), np.concatenate(list(self.journal.features(done))).ravel().tolist())


_JOBS: dict = {}


def _toy_job(spec, world):
    return _JOBS[spec.out_path]


@pytest.mark.parametrize("damage", [None, "once", "always"])
def test_the_runner_assembles_every_block_and_computes_an_unreadable_one_again(tmp_path, caplog, damage):
    out = tmp_path / "toy.h5"
    job = _JOBS[str(out)] = _ToyJob(out, 20, damage)  # 3 blocks: 8 + 8 + 4
    spec = JobSpec(str(tmp_path / "in"), str(out), None, _runtime(processes=1, threads=1))
    if damage == "always":  # the block cannot be read back even after computing it again: one line, rerun
        with pytest.raises(PipelineError, match=r"^\d of 3 blocks of squares are not in the journal .*rerun"):
            run_extraction(_toy_job, spec, n_blocks=len(job.spans), device_type="cpu")
        return
    with caplog.at_level(logging.WARNING):
        run_extraction(_toy_job, spec, n_blocks=len(job.spans), device_type="cpu")
    assert job.assembled == (list(range(20)), [float(r * r) for r in range(20)])
    assert job.fills == (2 if damage else 1)
    assert ("of 3 blocks of squares are missing from the journal: computing them again" in caplog.text) == bool(damage)
