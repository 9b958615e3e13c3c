"""``python -m favchat``: the command line, for launchers that start a module (``accelerate launch -m favchat ...``)."""

from favchat.cli import main

raise SystemExit(main())
