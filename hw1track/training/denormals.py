"""Denormal floats treated as zero by the CPU, for the whole process.

Adam's first moment of a weight whose gradient stays 0 (the inputs of a dead
ReLU unit) shrinks by β1 every step and falls into float32's denormal range
(below 1.2e-38) after about 800 steps. On x86 every operation on a denormal
takes a slow microcode path: with 3-8 % of part1_2a's Adam moments denormal,
an epoch of its stacked DNNs went from 3.5 s to 5.2 s by the fourth epoch, and
stayed at 3.5 s with denormals flushed (benchmarks/denormals.py). Values that small change nothing
else: the update they make, about lr·1e-38/√v, is far below the last bit of any
weight. The mode belongs to each thread and is inherited by threads started
later, so it must be set before torch starts its thread pool; the command line
sets it first thing (a notebook can call `flush_denormals` before its first
torch operation).
"""

from __future__ import annotations

import torch


def flush_denormals() -> bool:
    """Flush denormals to zero in this thread and the threads it starts; False if the CPU cannot."""
    return torch.set_flush_denormal(True)
