#!/usr/bin/env bash
# Every GPU check of maivar in one call: ~5 minutes on one H200 (each step has its own time limit; the worst
# case is 7 minutes). Nothing here runs in CI or in `make test`; a CUDA path counts as verified only once this
# script ran on a GPU and BENCHMARKS.md says so.
#
#   1. tests/test_cuda.py (`pytest -m cuda`): bf16 against fp32 and against the CPU, a real CUDA out-of-memory
#      halving the batch (OomGuard), torch.compile against eager, video features GPU against CPU, heads
#      training deterministically on the GPU, and data-parallel extract_audio on two GPUs (skipped with one);
#   2. bench_extract.py at UCF101 scale for the audio branch (6837 images, IRv2 299 px, batch 256, bf16) and
#      1500 videos for the video branch (TSN R50 224 px, 25 segments, 16 videos a batch, bf16), both against
#      the reference routes (MMAction2's pipeline, the authors' notebook) in the same run, with GPU use;
#   3. the same for the paper's BNInception TSN (300 videos);
#   4. bench_feed.py --device cuda --decode: the frame feed into the GPU, old route against new;
#   5. bench_heads.py --device cuda: the three heads at the paper's scale.
#
# On the workplace's device tool (the machine image has torch/timm but not MMAction2, PyAV, librosa):
#   here, once:   bash benchmarks/gpu_wheels.sh            # fills .whl/ (~45 MB, git-ignored)
#   device call:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=480)
# Elsewhere, with requirements.txt installed (CUDA torch): bash benchmarks/gpu_check.sh
# The log and a summary land in $OUT (default ./gpu_check_out): gpu_check.log, summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
LOG="$OUT/gpu_check.log"; SUMMARY="$OUT/summary.txt"
: >"$LOG"; : >"$SUMMARY"

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log everything, one summary line
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  local verdict=ok; [ "$rc" = 0 ] || verdict="FAILED rc=$rc"; [ "$rc" = 124 ] && verdict="TIMED OUT"
  printf '%-14s %-12s %4ss\n' "$name" "$verdict" $((SECONDS - t0)) | tee -a "$SUMMARY"
}

step environment 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; \
  $PY -c 'import torch, timm, mmaction, av, librosa; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
  \"timm\", timm.__version__, \"mmaction\", mmaction.__version__, \"av\", av.__version__, \"librosa\", librosa.__version__); \
  assert torch.cuda.is_available(), \"torch sees no GPU\"'"
grep -q "^environment  *ok" "$SUMMARY" || { echo "gpu_check: no usable GPU or packages (above); nothing else run"; exit 1; }
step pytest-cuda 150 $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
step extract-r50 170 $PY benchmarks/bench_extract.py --device cuda --config configs/tsn_r50_video.py \
  --videos 1500 --unique 64 --ref-videos 40 --images 6837 --ref-images 300 --batch-videos 16 --batch-size 256 \
  --precision bf16 --workdir /tmp/maivar-gpu-extract
step extract-bnin 70 $PY benchmarks/bench_extract.py --device cuda --config configs/tsn_bninception_video.py \
  --videos 300 --unique 64 --ref-videos 20 --batch-videos 16 --precision bf16 --skip audio \
  --workdir /tmp/maivar-gpu-extract
step feed 45 $PY benchmarks/bench_feed.py --device cuda --decode --videos 400 --batch 16 --repeat 2 \
  --workdir /tmp/maivar-gpu-feed
step heads 60 $PY benchmarks/bench_heads.py --device cuda
echo "=== summary"; cat "$SUMMARY"
! grep -qv ' ok ' "$SUMMARY"
