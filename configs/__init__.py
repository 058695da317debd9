"""Experiment configs: `get_config(arg)` per file; shared parts in common."""
