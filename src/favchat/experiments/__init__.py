"""Experiments that measure the paper's claims on FaceSynth, whose labels are exact (``favchat experiment``)."""
