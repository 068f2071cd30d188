#!/usr/bin/env bash
# Fetch, into .whl/ (git-ignored), the wheels that benchmarks/gpu_check.sh needs on a GPU machine whose image
# already holds torch, torchvision, timm, numpy, h5py, pandas, scipy, numba, opencv, pyyaml, tqdm and pytest
# (the workplace's nvidia-h200 image; /work/.library/device/KINDS.md lists it) but not MMAction2, PyAV or
# librosa. Python 3.12, x86-64. ~45 MB: inside the device tool's 64 MiB with the working tree (~4 MB).
# imageio-ffmpeg (30 MB) stays behind: the check never demuxes audio.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
wheels=(av==15.1.0 mmaction2==1.2.0 mmengine==0.10.7 mmcv-lite==2.1.0 importlib_metadata==10.2.0 librosa==0.11.0
        soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 decorator==5.3.1 addict==2.4.0 yapf==0.43.0
        termcolor==3.3.0 platformdirs==4.14.8)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${wheels[@]}" 2>&1 \
  | grep -v '^WARNING: Location' || true
ls .whl | wc -l | xargs echo "wheels in .whl:"; du -sh .whl
