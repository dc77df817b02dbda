#!/usr/bin/env bash
# Download, where pip works, the wheels benchmarks/gpu_check.sh needs on a GPU machine whose
# standard PyTorch image lacks them (CPython 3.12, x86-64; adjust PY for another Python):
#   bash benchmarks/gpu_wheels.sh      # fills .whl/ (keep it out of git: add /.whl/ to .git/info/exclude)
set -euo pipefail
PY=${PY:-3.12}
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  "${platforms[@]}" -d .whl pycocotools opencv-python-headless
# pure-Python packages: built into wheels here (fvcore is published as a source archive)
python3 -m pip wheel -q --no-deps -w .whl fvcore iopath yacs portalocker tabulate termcolor
ls .whl
