"""Readers for the evaluation sets in the layout their authors distribute (docs/datasets.md), one per set:
``dfew``, ``mafw``, ``dfec``, ``emer``, ``ytf``. Each finds its files from the root (or file) a user points at
and raises ``favchat.eval.benchmarks.BenchmarkError`` naming the file it expected and what is there instead.
The generic layouts of ``favchat.eval.benchmarks`` remain the fallback for copies in other shapes.
"""
