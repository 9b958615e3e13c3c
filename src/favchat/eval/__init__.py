"""Evaluation harness: reference metrics, the LLM judge, benchmark loaders, protocols and reports.

Python API: ``favchat.eval.metrics`` (``uar``, ``war``, ``cider``, ``rouge_l``, ``verification_accuracy``),
``favchat.eval.judge.Judge``, ``favchat.eval.protocols`` (``run_*`` / ``score_*``); the CLI is
``favchat eval <benchmark>`` (``favchat.eval.cli``). Protocols and layouts: docs/evaluation.md.
"""
