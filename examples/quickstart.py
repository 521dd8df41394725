"""A real clustrix example on the local executor (nothing configured = local cores).

Run it with ``bash scripts/example.sh`` (sets up a venv), or ``python examples/quickstart.py``
where clustrix-core is installed.
"""

from __future__ import annotations

import random
import time

from clustrix import JobError, cluster, get_config


@cluster(cores=2, memory="1GB", time="00:10:00")
def random_walk(n_steps: int, seed: int) -> float:
    """Distance from the origin after ``n_steps`` unit steps of a 2-D random walk."""
    rng = random.Random(seed)
    x = y = 0
    for _ in range(n_steps):
        dx, dy = rng.choice(((1, 0), (-1, 0), (0, 1), (0, -1)))
        x, y = x + dx, y + dy
    return (x * x + y * y) ** 0.5


@cluster
def checked_sqrt(value: float) -> float:
    if value < 0:
        raise ValueError(f"cannot take the square root of {value}")
    return value**0.5


def main() -> None:
    print(f"cluster_type: {get_config().cluster_type}")
    start = time.perf_counter()
    one = random_walk(100_000, seed=1)
    print(f"one walk of 100,000 steps ended {one:.1f} from the origin")

    future = random_walk.submit(10_000, seed=2)
    print(f"submitted job {future.job_id}; result {future.result():.1f}")

    n_walks, n_steps = 200, 10_000
    distances = random_walk.map([n_steps] * n_walks, range(n_walks))
    mean_sq = sum(d * d for d in distances) / n_walks
    print(f"{n_walks} walks: mean squared distance {mean_sq:.0f} (theory: {n_steps})")

    try:
        checked_sqrt(-1)
    except ValueError as exc:
        print(f"the remote ValueError came back as itself: {exc}")
    except JobError as exc:  # pragma: no cover - would mean the error did not travel
        raise SystemExit(f"unexpected JobError: {exc}") from exc
    print(f"done in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
