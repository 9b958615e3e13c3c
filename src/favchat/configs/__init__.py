"""Packaged recipes (YAML) read with importlib.resources."""
