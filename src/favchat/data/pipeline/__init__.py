"""The dataset pipeline of App. B: filter → trim → extract → annotate → qa, resumable and sharded.

``favchat data build`` runs every stage (``build.build``); each stage is also its own subcommand.
See ``docs/pipeline.md``.
"""
