"""The stages' worker processes do not rely on ``fork``: under ``forkserver`` and ``spawn`` (Python 3.14's
default on Linux is no longer fork) every stage that starts workers writes the same bytes as under ``fork``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from stage_cmd import run_stage_in_process, stage_path

STAGES = ("prepare", "render", "extract_audio", "extract_video")
OUTPUTS = [stage_path("prepare", "manifest"), stage_path("prepare", "rejections"), stage_path("prepare", "audio"),
           stage_path("render", "images"), stage_path("extract_audio", "features"),
           stage_path("extract_video", "features")]


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def outputs_by_method(tiny_dataset, tmp_path_factory):
    from test_backbones import write_tiny_tsn

    root, _ = tiny_dataset
    base = tmp_path_factory.mktemp("methods")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"]["root"] = str(root)
    params["prepare"].update(timeout_s=60)
    params["render"].update(image_size=32, sample_rate=16000, previews_per_class=1)
    params["extract_audio"].update(backbone="resnet18", input_size=32)
    params["extract_video"].update(config=str(write_tiny_tsn(base / "tsn.py")), num_segments=3, timeout_s=60)
    params["runtime"].update(workers=2, device="cpu")
    params["runtime"]["extract_audio"]["batch_size"] = 4
    params["runtime"]["extract_video"]["batch_videos"] = 2
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        for method in ("fork", "forkserver", "spawn"):
            mp.setenv("MAIVAR_START_METHOD", method)
            work = base / method
            work.mkdir()
            (work / "params.yaml").write_text(yaml.safe_dump(params))
            for stage in STAGES:
                assert run_stage_in_process(stage, work) == 0, (method, stage)
            results[method] = {out: digest(work / out) for out in OUTPUTS}
    return results


@pytest.mark.slow
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_every_stage_writes_the_same_bytes_under_each_start_method(outputs_by_method, method):
    assert outputs_by_method[method] == outputs_by_method["fork"]
