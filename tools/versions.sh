# The torch release the lock is made and tested with (the lock names every other package), and where its
# CPU build comes from. Sourced by tools/setup.sh, tools/lock.sh and tools/upgrade-check.sh.
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
