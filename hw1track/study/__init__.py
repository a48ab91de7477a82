"""Experiments as plug-ins: discovery of `runs/` and `analysis/`, the context a run module trains in, one invocation."""
