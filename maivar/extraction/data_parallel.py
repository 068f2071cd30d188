"""Data-parallel extraction: the blocks of a stage's inputs shared among processes (ranks), on torch.distributed.

The inputs of ``extract_audio`` / ``extract_video`` are cut into blocks (:func:`maivar.extraction.resume.blocks`,
8 batches each). Rank ``r`` of ``W`` computes blocks ``r, r + W, r + 2W, ...`` (:func:`rank_blocks`) and
journals each one as it finishes (:class:`~maivar.extraction.resume.Journal`); the store is then assembled
from the journal, block by block in input order. What a rank computes does not depend on which rank it is or
how many there are, so the store is the same for any number of processes: the same ids in the same order,
and on a CPU the same bytes when each process runs the same number of threads (``runtime.threads``;
convolutions sum in another order with another thread count, ~1e-8 apart).

Three ways to run, one code path:

- **one process** (``runtime.processes: 1``, the default): the stage process is rank 0 of 1;
- **N processes on this machine** (``runtime.processes: N``): the stage launches N ranks with torchrun's
  launcher (:func:`torch.distributed.launcher.api.elastic_launch`, a standalone rendezvous on localhost), each
  on its own GPU (``cuda:LOCAL_RANK``) or, on a CPU, with the cores shared out; when they are done, the stage
  process assembles the store. A rank that dies stops the others; what every rank finished stays journaled
  and the next ``dvc repro`` computes only the rest;
- **many machines**: ``torchrun`` runs the stage script itself on every node (``--nnodes``, ``--node-rank``;
  or ``srun``), all of them sharing the repository on one filesystem; the ranks fill the journal and exit
  without writing the output; ``dvc repro`` on one machine then finds every block journaled, computes
  nothing, assembles the store and caches it (docs/SCALING.md has the commands).

The process group (gloo on a CPU, NCCL on GPUs) gathers each rank's summary for the log ("world size 2").
``runtime.processes`` and ``runtime.threads`` are machine settings: they never rerun a stage, and the journal
does not depend on them (nor on the device), so a journal filled on GPU nodes is assembled on any machine.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from maivar.core.errors import PipelineError
from maivar.core.parallel import default_start_method, default_workers
from maivar.core.stage import _on_sigterm, setup_logging
from maivar.extraction.resume import Journal, Resumed
from maivar.settings.base import Section
from maivar.settings.runtime import RuntimeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """Where this process stands: rank ``rank`` of ``size``, ``local_rank`` of ``local_size`` on this machine.
    ``launched``: started by torchrun (or its launcher), which sets ``RANK``/``WORLD_SIZE`` in the environment."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    launched: bool = False

    @classmethod
    def from_env(cls) -> World:
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        env = os.environ
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                   int(env.get("LOCAL_WORLD_SIZE", 1)), launched=True)

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size} (world size {self.size}; {self.local_size} on this machine)"


@dataclass(frozen=True)
class JobSpec:
    """An extract stage's job as the stage names it and every rank receives it (picklable): the input (the image
    store, or the manifest), the output, the stage's settings and the machine's (``runtime``), and the weights
    file (the weights stage's output; None only where a test builds no backbone)."""

    source: str
    out_path: str
    settings: Section  # ExtractAudioSettings | ExtractVideoSettings
    runtime: RuntimeSettings
    weights: str | None = None


def rank_setup() -> None:
    """In a rank's process: the stage's logging, and SIGTERM (how the launcher stops the other ranks when one
    fails) as an exception, so that the finished batches are journaled on the way out."""
    setup_logging()
    signal.signal(signal.SIGTERM, _on_sigterm)


def rank_blocks(blocks: Sequence[range], world: World) -> list[range]:
    """This rank's blocks: every ``world.size``-th from ``world.rank`` (round robin: ranks get nearly equal
    shares however the work is spread over the input)."""
    return list(blocks[world.rank :: world.size])


def rank_device(device: torch.device, world: World) -> torch.device:
    """A rank's device: on GPUs ``cuda:LOCAL_RANK`` (one GPU a process), else ``device``."""
    if device.type != "cuda" or world.local_size == 1:
        return device
    count = torch.cuda.device_count()
    if world.local_size > count:
        raise PipelineError(f"{world.local_size} processes on this machine but {count} GPU(s): set "
                            f"runtime.processes to at most {count}")
    return torch.device("cuda", world.local_rank)


def rank_threads(threads: int, world: World) -> int:
    """Set and return this process's intra-op threads: ``threads`` (``runtime.threads``), or with 0 the cores
    shared out among this machine's processes."""
    n = threads or max(1, default_workers() // max(1, world.local_size))
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def rank_workers(workers: int | None, world: World) -> int:
    """Decoding / loading worker processes of one rank: ``workers`` (0/None: all cores) shared out among this
    machine's processes."""
    return max(1, (workers or default_workers()) // max(1, world.local_size))


@contextmanager
def process_group(world: World, device: torch.device):
    """torch.distributed's process group for a launched world of more than one rank (NCCL on GPUs, gloo on a
    CPU); nothing otherwise."""
    import torch.distributed as dist

    if not world.launched or world.size == 1 or not dist.is_available():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def gather(summary: dict) -> list[dict]:
    """Every rank's ``summary``, in rank order (rank 0 logs them); just ``[summary]`` without a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [summary]
    out: list = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(out, summary)
    except Exception as exc:  # noqa: BLE001 - another rank stopped: this one's work is journaled all the same
        log.warning("rank %d: could not gather the other ranks' summaries (%s)", summary["rank"],
                    str(exc).splitlines()[0][:200])
        return [summary]
    return out


def log_summaries(what: str, summaries: list[dict]) -> None:
    for s in summaries:
        log.info("%s: rank %d computed %d of its %d blocks (%d %s) on %s with %d threads, %d rejected", what,
                 s["rank"], s["computed_blocks"], s["blocks"], s["items"], what, s["device"], s["threads"],
                 s["rejected"])


def launch(entry: Callable[..., dict], args: tuple, nprocs: int, *, device_type: str) -> list[dict]:
    """Run ``entry(*args)`` in ``nprocs`` ranks on this machine (torchrun's launcher, standalone) and return
    what each returned, in rank order. ``entry`` returns a dict, or ``{"error": message}`` for a
    :class:`PipelineError`; any failure of a rank is one :class:`PipelineError` here.

    The ranks are started with :func:`~maivar.core.parallel.default_start_method` on a CPU (fork: they
    inherit the stage's imports) and with ``spawn`` on GPUs (CUDA does not survive a fork)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed", "torch.multiprocessing", "torchelastic-events-null"):
        # the agent's per-step lines, and its report of a failed rank: the PipelineError below says it in one line
        logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5,
        start_method="spawn" if device_type == "cuda" else default_start_method(),
    )
    log.info("data parallel: %d processes on this machine (world size %d)", nprocs, nprocs)
    try:
        results = elastic_launch(config, entry)(*args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()  # the rank that failed first; the others were stopped after it
        why = (f"killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exit code {failure.exitcode}")
        message = failure.message if isinstance(failure.message, str) else ""
        if failure.exitcode > 0 and message.strip() and "To enable traceback" not in message:
            why += f": {message.strip().splitlines()[-1]}"
        raise PipelineError(f"rank {rank} of {nprocs} failed ({why}); what the ranks finished is journaled: "
                            "rerun to compute only the rest") from None
    ordered = [results[r] for r in sorted(results)]
    for r, result in enumerate(ordered):
        if isinstance(result, dict) and "error" in result:
            raise PipelineError(f"rank {r}: {result['error']}")
    blocks_all = sum(s["blocks"] for s in ordered)
    computed = sum(s["computed_blocks"] for s in ordered)
    log.info("the %d ranks computed %d of the %d blocks%s", nprocs, computed, blocks_all,
             "" if computed == blocks_all else "; the others were journaled by an interrupted run")
    return ordered


def rank_todo(journal: Journal, spans: Sequence[range], world: World, what: str) -> tuple[list[range], list[range]]:
    """This rank's blocks, and those of them not journaled yet (saying what an interrupted run had finished)."""
    mine = rank_blocks(spans, world)
    todo = journal.todo(mine)
    finished = sum(map(len, mine)) - sum(map(len, todo))
    if finished:
        log.info("resuming: %d of %d %s were done by an interrupted run (%s)", finished, sum(map(len, mine)), what,
                 journal.dir)
    return mine, todo


def rank_summary(world: World, mine: Sequence[range], todo: Sequence[range], device: torch.device, threads: int,
                 rejected: int) -> dict:
    """What a rank did, for :func:`log_summaries` and :func:`launch`."""
    return {"rank": world.rank, "blocks": len(mine), "computed_blocks": len(todo), "items": sum(map(len, todo)),
            "device": str(device), "threads": threads, "rejected": rejected}


# What an extract stage sets up in each process (``make_job(spec, world)``, a module-level function, so that a
# spawned rank can unpickle it): a job (:class:`maivar.extraction.job.Job`) with ``what`` (the items, for the
# log: "images", "videos"), ``device``, ``journal``, ``spans`` (the blocks), ``fill(world, threads)`` (the rank's
# unjournaled blocks into the journal; its :func:`rank_summary`) and ``assemble(out_path, done)`` (the store,
# from every block's journaled results, in input order).
MakeJob = Callable[[JobSpec, World], Any]


def run_rank(make_job: MakeJob, spec: JobSpec) -> dict:
    """One rank (launched here or by torchrun): its blocks into the journal; every rank's summary gathered and
    logged by rank 0. Returns this rank's summary, or ``{"error": message}`` for a :class:`PipelineError`."""
    rank_setup()
    world = World.from_env()
    try:
        threads = rank_threads(spec.runtime.threads, world)
        job = make_job(spec, world)
        with process_group(world, job.device):
            summaries = gather(job.fill(world, threads))
        if world.rank == 0:
            log_summaries(job.what, summaries)
        return summaries[0] if len(summaries) == 1 else summaries[world.rank]
    except PipelineError as exc:
        return {"error": str(exc)}


def run_extraction(make_job: MakeJob, spec: JobSpec, *, n_blocks: int, device_type: str) -> None:
    """Run an extract stage the way this process was started: under torchrun, as one rank that only fills the
    journal; with ``runtime.processes`` > 1 (and more than one block), N ranks launched here, then the store
    assembled; else in this process alone. ``device_type``: where the backbone runs (``cuda``: ranks spawned)."""
    world = World.from_env()
    if world.launched:  # torchrun on each machine: fill the journal; `dvc repro` assembles the output
        result = run_rank(make_job, spec)
        if "error" in result:
            raise PipelineError(result["error"])
        log.info("%s: its blocks are journaled in %s.partial; once every rank is done, `dvc repro` assembles "
                 "%s", world, spec.out_path, spec.out_path)
        return
    nprocs = spec.runtime.processes
    threads = rank_threads(spec.runtime.threads, World())
    if nprocs > 1 and n_blocks > 1:
        launch(run_rank, (make_job, spec), min(nprocs, n_blocks), device_type=device_type)
        job = make_job(spec, World())
    else:
        job = make_job(spec, World())
        job.fill(World(), threads)
    job.assemble(spec.out_path, _collect(job, threads))


def _collect(job, threads: int) -> Resumed:
    """Every block's results from the journal, without their features (the assembly reads them chunk by chunk);
    a block whose chunk could not be read (it is removed) is computed again here, and one still missing is a
    one-line error."""
    done, unfinished = job.journal.collect(job.spans, features=False)
    if unfinished:
        log.warning("%d of %d blocks of %s are missing from the journal: computing them again", len(unfinished),
                    len(job.spans), job.what)
        job.fill(World(), threads)
        done, unfinished = job.journal.collect(job.spans, features=False)
    if unfinished:
        raise PipelineError(f"{len(unfinished)} of {len(job.spans)} blocks of {job.what} are not in the journal "
                            f"{job.journal.dir} (first: {job.what} {unfinished[0].start}-{unfinished[0].stop - 1}): "
                            "rerun to compute them")
    return done
