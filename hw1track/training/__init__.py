"""How models are trained: data, models, targets, the epoch driver, and the learners that plug into it.

One epoch driver (`driver.drive`) runs every training path: a single model
(`fit`), same-shape MLPs side by side (`mlp_stack`), and full-batch stacks of
tiny nets (`full_batch`). Nothing here knows about MLflow: training reports to
a `sinks.MetricSink`.
"""
