#!/usr/bin/env bash
# Does the project still work on the newest releases pyproject.toml allows? Resolves them into a scratch lock,
# installs that into a scratch environment and runs the fast tests there; .venv and requirements.lock are left
# as they are. Run it before a release and whenever a dependency ships a new version:
#
#   bash tools/upgrade-check.sh
#
# On success it prints what would move; adopt it with `bash tools/lock.sh --upgrade`, then `bash .ci/run`.
# torch stays at tools/versions.sh's version (change it there to move it).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
FAVCHAT_LOCK="$scratch/upgrade.lock" bash tools/lock.sh --upgrade
export FAVCHAT_VENV="$scratch/venv" FAVCHAT_LOCK="$scratch/upgrade.lock"
bash tools/setup.sh python -m pytest -q -m "not slow" -p no:cacheprovider
echo "The fast tests pass on the newest allowed releases. Versions that differ from requirements.lock:"
diff <(grep -E '^[A-Za-z0-9]' requirements.lock) <(grep -E '^[A-Za-z0-9]' "$scratch/upgrade.lock") | grep '^[<>]' || echo "  (none)"
