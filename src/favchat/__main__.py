"""``python -m favchat``: the command line, for launchers that start a module (``accelerate launch -m favchat ...``)."""

from favchat.cli import main

if __name__ == "__main__":  # not when a test imports every module
    raise SystemExit(main())
