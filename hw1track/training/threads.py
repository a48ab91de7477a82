"""How many threads torch uses inside one operation, for one stretch of work.

The operations of small models are too short to share between cores: when
other jobs hold the cores, a second intra-op thread makes each operation wait
for one, and stacked part1_2c training once ran 16x slower with 2 threads than
with 1 on a busy 2-core machine (benchmarks/part1_2c_batched.py). An experiment
may declare the count it runs best with (THREADS); `hw1track run --threads`
overrides it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

MAX_THREADS = 1024  # far above any machine's cores; torch overflows on counts beyond 32 bits

@contextmanager
def intra_op_threads(n_threads: int) -> Iterator[None]:
    """Run the body with `n_threads` intra-op threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
