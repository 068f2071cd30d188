"""GPU readiness: the CUDA paths, checked on a GPU (marked `cuda`; skipped where torch sees none).

They run in benchmarks/gpu_check.sh on a machine with a GPU. Nothing here is claimed verified until it ran there
(BENCHMARKS.md says when it did).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maivar.audio.backbone import IMAGENET_MEAN, IMAGENET_STD, create_audio_backbone
from maivar.audio.features import extract_audio_features
from maivar.extraction.inference import prepare_for_inference
from maivar.heads.mlp import MLP
from maivar.heads.training import set_determinism, train_head
from maivar.video.features import VideoClip, extract_video_features

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]
GPU = torch.device("cuda")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def audio_features(model, rows, **kwargs):
    args = dict(input_size=64, mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=8, workers=0, progress=False)
    return extract_audio_features(model, rows, **{**args, **kwargs})


@pytest.fixture(scope="module")
def resnet():
    model, _ = create_audio_backbone("resnet18", pretrained=False, checkpoint=None, seed=0)
    prepare_for_inference(model, GPU, fold_batchnorm=True, input_size=64)
    return model


def test_bf16_features_on_the_gpu_are_close_to_fp32_and_to_the_cpu(resnet):
    rows = images(16)
    fp32 = audio_features(resnet, rows, device=GPU, precision="fp32")
    bf16 = audio_features(resnet, rows, device=GPU, precision="bf16")
    assert cosine(fp32, bf16).min() > 0.999
    cpu_model, _ = create_audio_backbone("resnet18", pretrained=False, checkpoint=None, seed=0)
    prepare_for_inference(cpu_model, torch.device("cpu"), fold_batchnorm=True, input_size=64)
    cpu = audio_features(cpu_model, rows, device=torch.device("cpu"), precision="fp32")
    # cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32), so "fp32" on the GPU rounds
    # inputs to a 10-bit mantissa: close to the CPU, not equal.
    assert cosine(fp32, cpu).min() > 0.999


def test_a_real_out_of_memory_halves_the_batch_and_gives_the_same_features(resnet):
    """A per-process memory fraction small enough that a batch of 256 large images cannot fit: OomGuard must
    catch the real CUDA OOM, halve, and finish with the features of a small-batch run."""
    rows = images(64, size=224, seed=1)
    reference = audio_features(resnet, rows, device=GPU, batch_size=4, input_size=224)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(GPU).total_memory
    fraction = min(1.0, (torch.cuda.memory_allocated(GPU) + 1.5e9) / total)  # ~1.5 GB above what is in use
    torch.cuda.set_per_process_memory_fraction(fraction, GPU)
    try:
        big = audio_features(resnet, np.repeat(rows, 8, axis=0), device=GPU, batch_size=512, input_size=224)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, GPU)
        torch.cuda.empty_cache()
    np.testing.assert_allclose(big[:64], reference, rtol=1e-3, atol=1e-4 * np.abs(reference).max())


def test_torch_compile_gives_the_eager_features():
    eager, _ = create_audio_backbone("resnet18", pretrained=False, checkpoint=None, seed=0)
    compiled, _ = create_audio_backbone("resnet18", pretrained=False, checkpoint=None, seed=0)
    prepare_for_inference(eager, GPU, fold_batchnorm=True, input_size=64)
    prepare_for_inference(compiled, GPU, fold_batchnorm=True, input_size=64, compile_model=True)
    rows = images(16, seed=2)
    a = audio_features(eager, rows, device=GPU)
    b = audio_features(compiled, rows, device=GPU)
    assert cosine(a, b).min() > 0.9999


def test_video_features_on_the_gpu_match_the_cpu(tiny_tsn, tmp_path):
    from test_video_features import _clips

    model, pre, _ = tiny_tsn
    clips = [c for c in _clips(tmp_path) if isinstance(c, VideoClip)]
    kwargs = dict(num_segments=3, pre=pre, batch_videos=2, workers=2, timeout_s=60, progress=False)
    cpu_rows, cpu, _ = extract_video_features(model, clips, device=torch.device("cpu"), **kwargs)
    model.to(GPU)
    try:
        rows, gpu, _ = extract_video_features(model, clips, device=GPU, **kwargs)
        _, gpu_bf16, _ = extract_video_features(model, clips, device=GPU, precision="bf16", **kwargs)
    finally:
        model.to("cpu")
    assert rows == cpu_rows
    assert cosine(gpu, cpu).min() > 0.999 and cosine(gpu_bf16, cpu).min() > 0.999


def test_heads_train_on_the_gpu_deterministically():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 32)).astype(np.float32)
    y = np.arange(256) % 4

    def train():
        set_determinism(0, 1)
        model = MLP(32, [16], 4, 0.1)
        history = train_head(model, x, y, x[:64], y[:64], epochs=3, lr=1e-3, batch_size=16, l1=1e-5, seed=0,
                             device=GPU)
        return model.state_dict(), history

    (a, ha), (b, hb) = train(), train()
    assert all(torch.equal(a[k], b[k]) for k in a) and ha == hb
    assert next(iter(a.values())).device.type == "cpu"  # the model comes back where it was


def test_heads_from_a_file_train_on_the_gpu_as_from_memory(tmp_path):
    """runtime.heads.memory_mb past: the batches read from the file go to the GPU one by one; the same weights
    and history as the rows standardized once on the GPU (the CPU's bit-for-bit equality: tests/test_streaming.py)."""
    from maivar.heads.rows import Spill

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 24)).astype(np.float32)
    y = np.arange(300) % 3
    writer = Spill(tmp_path / "spill", 0).writer("x", (24,))
    writer.append(x)
    on_disk = writer.finish()
    runs = []
    for rows in (x, on_disk):
        set_determinism(0, 1)
        model = MLP(24, [16], 3, 0.1)
        history = train_head(model, rows, y, rows, y, epochs=3, lr=1e-3, batch_size=16, l1=1e-5, seed=0, device=GPU,
                             train_rows=np.arange(200), test_rows=np.arange(200, 300))
        runs.append((model.state_dict(), history))
    (a, ha), (b, hb) = runs
    assert all(torch.equal(a[k], b[k]) for k in a) and ha == hb


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpu_data_parallel_extract_audio_matches_one_gpu(tmp_path):
    """runtime.processes: 2 on two GPUs (NCCL process group, spawned ranks, cuda:0 and cuda:1): the ids of the
    one-GPU store, the features within bf16/TF32 rounding of it."""
    import yaml

    from maivar.core.feature_store import open_store

    from stage_cmd import run_stage_in_process, stage_path
    from test_audio_features import _stage_dir, images

    work = _stage_dir(tmp_path, images(40, seed=5), [f"v{i:02d}" for i in range(40)], [i % 3 for i in range(40)], [])
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["runtime"].update(device="cuda")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    out = work / stage_path("extract_audio", "features")
    assert run_stage_in_process("extract_audio", work) == 0
    one = open_store(out, "features")
    out.unlink()
    params["runtime"].update(processes=2)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage_in_process("extract_audio", work) == 0
    two = open_store(out, "features")
    assert two.ids == one.ids and two.attrs["device"] == "cuda"
    assert cosine(two.data, one.data).min() > 0.9999
