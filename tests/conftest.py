"""Shared fixtures: a tiny synthetic dataset in UCF101 layout, and a copy of it that a test may damage; and the
sentinel folder outside every workspace that no stage may write to."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from maivar.settings.synthesize import SynthesizeSettings
from maivar.synthetic import synthesize

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
UCF_LISTS = FIXTURES / "ucfTrainTestlist"

# 4 classes (1 without audio) x 9 groups: split 1 tests on groups 1-7, trains on 8-9.
TINY = dict(seed=3, classes=4, classes_without_audio=1, groups=9, clips_per_group=1, silent_clips=1,
            duration_s=1.0, width=96, height=72, fps=10, sample_rate=16000, noise=0.3)


# Outside every test's workspace (tmp_path): a stage that writes here (a label taken as a path, a "../" escape)
# fails the test that ran it. Hostile inputs (tests/test_hostile.py) aim their escapes at it.
SENTINEL = Path(tempfile.gettempdir()) / f"maivar-sentinel-{os.getpid()}"


_CHECKED = [0]  # stage runs counted at the last check


@pytest.fixture(autouse=True)
def nothing_written_outside_the_workspace():
    """After each test that ran a stage, or whose fixtures did (tests/stage_cmd.py counts the runs): the sentinel
    folder is still empty. One listdir per such test."""
    from stage_cmd import STAGE_RUNS

    SENTINEL.mkdir(exist_ok=True)
    yield
    if STAGE_RUNS[0] != _CHECKED[0]:
        _CHECKED[0] = STAGE_RUNS[0]
        found = sorted(p.name for p in SENTINEL.iterdir())
        assert not found, f"a stage wrote outside its workspace, into {SENTINEL}: {found}"


@pytest.fixture(scope="session", autouse=True)
def _sentinel_removed():
    yield
    shutil.rmtree(SENTINEL, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> tuple[Path, dict]:
    """(root, summary) of a tiny synthetic dataset; read-only: use ``tiny_copy`` to damage it."""
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    summary = synthesize(root, settings=SynthesizeSettings.from_mapping(TINY), workers=2)
    return root, summary


@pytest.fixture
def tiny_copy(tiny_dataset, tmp_path) -> tuple[Path, dict]:
    root, summary = tiny_dataset
    copy = tmp_path / "dataset"
    shutil.copytree(root, copy)
    return copy, summary


@pytest.fixture(scope="module")
def tiny_tsn(tmp_path_factory):
    """(model, preprocessing, config path) of a tiny TSN (ResNet-18, 32 px crops), randomly initialized."""
    from maivar.video.tsn import build_tsn, preprocessing_from_config

    from test_backbones import write_tiny_tsn

    config = write_tiny_tsn(tmp_path_factory.mktemp("cfg") / "tsn.py")
    model, _, cfg = build_tsn(config, checkpoint=None, seed=0)
    return model, preprocessing_from_config(cfg), config


@pytest.fixture(scope="session")
def csv_example(tiny_dataset, tmp_path_factory) -> tuple[Path, dict]:
    """(root, facts) of a csv-format dataset of MP4 files (tests/dataset_examples.py)."""
    from dataset_examples import make_csv

    root = tmp_path_factory.mktemp("csv") / "own videos"
    return root, make_csv(tiny_dataset[0], root)


@pytest.fixture(scope="session")
def ucf101_mixed_example(tiny_dataset, tmp_path_factory) -> tuple[Path, dict]:
    """(root, facts) of a UCF101-layout dataset of MP4, MKV and WebM files with two broken ones."""
    from dataset_examples import make_ucf101_mixed

    root = tmp_path_factory.mktemp("mixed") / "ucf"
    return root, make_ucf101_mixed(tiny_dataset[0], root)


@pytest.fixture(scope="session")
def kinetics_example(tiny_dataset, tmp_path_factory) -> tuple[Path, dict]:
    """(root, facts) of a Kinetics-layout dataset (annotation CSVs, train/<label>/ and a flat val/ folder)."""
    from dataset_examples import make_kinetics

    root = tmp_path_factory.mktemp("kinetics") / "k400"
    return root, make_kinetics(tiny_dataset[0], root)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """(repo, env): the whole pipeline, tiny, run once in a scratch DVC repository, recorded in dvc.lock and
    committed (tests/test_predict.py's ``record_tiny_run``); shared by test_predict.py and test_remote.py."""
    from test_predict import record_tiny_run

    return record_tiny_run(tmp_path_factory.mktemp("predict") / "repo")


# The files whose tests take longest, first (measured: a file's wall time in one of `make test`'s two workers,
# BENCHMARKS "CI time"): `make test` spreads whole files over the cores (pytest-xdist, --dist loadfile, with
# --no-loadscope-reorder: xdist would otherwise put the files with the most tests first) in collection order, and
# a long file started last would run alone at the end. The order of the tests within a file is unchanged.
LONGEST_FIRST = ("test_presets.py", "test_datasets.py", "test_faults_killed.py", "test_remote.py", "test_parallel.py",
                 "test_start_methods.py", "test_data_parallel.py", "test_predict.py", "test_video_features.py",
                 "test_checkpoints.py", "test_cache_links.py", "test_render_stage.py", "test_audio_images.py",
                 "test_audio_features.py", "test_settings.py", "test_faults_resources.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: other files keep their order
