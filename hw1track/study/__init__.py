"""Experiments as plug-ins: discovery of `runs/` and `analysis/`, the context a run module trains in, one invocation,
and where its replicates train (in this process, or as Ray tasks)."""
