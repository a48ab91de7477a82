"""Everything between a training loop and MLflow: the store, runs and their identity, buffered metrics, reading back.

Nothing here knows what an experiment trains; `study` uses it to file models
as runs, `reporting` and notebooks to read them back (`tracking.query`).
"""
