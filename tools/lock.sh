#!/usr/bin/env bash
# Regenerates requirements.lock from pyproject.toml's ranges (all extras), for CPython 3.11 on Linux x86-64,
# the platform CI tests on:
#
#   bash tools/lock.sh              # keep the locked versions that still fit pyproject.toml
#   bash tools/lock.sh --upgrade    # the newest releases pyproject.toml allows
#
# torch is resolved as its CPU build at tools/versions.sh's version and left out of the file (tools/setup.sh
# installs it first, by itself); its own dependencies are in the file. Then run `bash .ci/run`: the lock is
# what the test suite passed with.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/versions.sh
out=${FAVCHAT_LOCK:-requirements.lock}
# where torch's CPU build is found: a local wheel folder (these build machines keep one), else PyTorch's index
if [ -d /opt/wheels ]; then links=(--find-links /opt/wheels); else links=(--find-links "$TORCH_CPU_INDEX/torch/"); fi
uv=$(command -v uv || echo .venv/bin/uv)
"$uv" pip compile pyproject.toml --all-extras --quiet "${links[@]}" \
  --constraint <(echo "torch==$TORCH_VERSION") --no-emit-package torch \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --custom-compile-command "bash tools/lock.sh" --output-file "$out" "$@"
