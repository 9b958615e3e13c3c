"""``python -m favchat``: the command line, for launchers that start a module (``accelerate launch -m favchat ...``)."""

from favchat.cli import main

if __name__ == "__main__":  # importing the module (as the import test does) must not run the command line
    raise SystemExit(main())
