"""Milliseconds per training step of the part1_3c MLP with 1 and with 2 intra-op threads.

Why: on a 2-core machine shared with other jobs, torch's default thread pool
(one thread per core) can make each tiny step wait for a core that another
process holds. Run it on the machine that will run the study:

    .venv/bin/python benchmarks/part1_3c_threads.py
"""

from __future__ import annotations

import subprocess
import sys
import time

STEPS = 300

CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from hw1track.training.models import mlp
from hw1track.training.models import seeded_model
batch = int(sys.argv[2])
model = seeded_model(lambda: mlp((784, 128, 64, 10)), 0)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
def step():
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
for _ in range(20):
    step()
start = time.perf_counter()
for _ in range({steps}):
    step()
print((time.perf_counter() - start) / {steps} * 1e3)
"""


def ms_per_step(threads: int, batch: int) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD.format(steps=STEPS), str(threads), str(batch)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def main() -> None:
    print(f"MLP 784-128-64-10, Adam, {STEPS} steps per measurement ({time.strftime('%H:%M:%S')})")
    for batch in (10, 64, 1000):
        one, two = ms_per_step(1, batch), ms_per_step(2, batch)
        print(f"batch {batch:5d}: 1 thread {one:7.2f} ms/step, 2 threads {two:7.2f} ms/step, "
              f"2/1 = {two / one:.2f}")


if __name__ == "__main__":
    main()
