"""hw1track: the HW1 deep-learning experiments on MNIST, tracked in MLflow.

The library holds the shared mechanics (data, models, training loop, tracking,
plotting, command line); `runs/` declares what each experiment trains and
`analysis/` what each one draws from the tracking store.
"""

__version__ = "0.1.0"
