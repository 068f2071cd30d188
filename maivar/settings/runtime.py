"""``runtime``: machine settings. No stage lists this section in dvc.yaml, so a change never reruns a stage:
only what makes a stage faster belongs here (devices, workers, processes, batch sizes, compilation)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Bool, Int, Pattern, Section, nested, setting

__all__ = ["AudioRuntime", "HeadsRuntime", "RuntimeSettings", "VideoRuntime"]


@dataclass(frozen=True)
class AudioRuntime(Section):
    SECTION = "runtime.extract_audio"
    batch_size: int = setting(Int(1, 65536), "images a forward pass")
    compile: bool = setting(Bool(), "torch.compile the backbone")


@dataclass(frozen=True)
class VideoRuntime(Section):
    SECTION = "runtime.extract_video"
    batch_videos: int = setting(Int(1, 4096), "videos a forward pass")
    compile: bool = setting(Bool())


@dataclass(frozen=True)
class HeadsRuntime(Section):
    SECTION = "runtime.heads"
    memory_mb: int = setting(Int(0, 1 << 30), "MB of features a head holds in memory (twice); past it they are read "
                             "from a file a batch at a time (the same numbers); 0 = always from the file")


@dataclass(frozen=True)
class RuntimeSettings(Section):
    SECTION = "runtime"
    device: str = setting(Pattern(r"auto|cpu|cuda(:[0-9]{1,3})?", "auto, cpu, cuda or cuda:N"))
    workers: int = setting(Int(0, 4096), "worker processes; 0 = all cores")
    processes: int = setting(Int(1, 4096), "data-parallel extracting processes")
    threads: int = setting(Int(0, 4096), "intra-op threads of each extracting process; 0 = shared out")
    extract_audio: AudioRuntime = nested(AudioRuntime)
    extract_video: VideoRuntime = nested(VideoRuntime)
    heads: HeadsRuntime = nested(HeadsRuntime)

    @property
    def worker_count(self) -> int | None:
        """``workers`` for :func:`maivar.core.parallel.guarded_map`: None (all cores) for 0."""
        return self.workers or None
