"""Tutorial 1 of docs/kubernetes.md: data-parallel training workers as Kubernetes pods.

Each worker trains a linear model on its own shard of the data (plain Python SGD, so
the example needs no numpy) in a pod with a CPU and memory *limit*; the driver
averages the workers' weights (one round of parameter averaging). Run it with a
kubeconfig: ``python examples/kubernetes_training.py`` (uses ``~/.kube/config``).
"""

# skip-test: needs a Kubernetes cluster (tests/k8s/test_k8s_tutorials.py runs it against the testbed)

from __future__ import annotations

import random

from clustrix import cluster, configure

TRUE_WEIGHTS = (2.0, -3.0, 0.5)


@cluster(cores=1, memory="256MB", cpu_limit=1, memory_limit="512Mi", time="00:10:00")
def train_worker(shard: int, n_shards: int, epochs: int = 20) -> list[float]:
    """Fit y = w.x on this worker's shard of a synthetic data set; return the weights."""
    rng = random.Random(shard)
    samples = []
    for _ in range(2000 // n_shards):
        x = [rng.uniform(-1, 1) for _ in TRUE_WEIGHTS]
        y = sum(w * xi for w, xi in zip(TRUE_WEIGHTS, x)) + rng.gauss(0, 0.01)
        samples.append((x, y))
    weights = [0.0] * len(TRUE_WEIGHTS)
    for _ in range(epochs):
        for x, y in samples:
            error = sum(w * xi for w, xi in zip(weights, x)) - y
            weights = [w - 0.05 * error * xi for w, xi in zip(weights, x)]
    return weights


def train(n_workers: int = 4) -> list[float]:
    """Run ``n_workers`` workers as one Kubernetes map and average their weights."""
    per_worker = train_worker.map(range(n_workers), [n_workers] * n_workers)
    return [sum(ws) / n_workers for ws in zip(*per_worker)]


if __name__ == "__main__":
    configure(cluster_type="kubernetes", namespace="default")
    print("averaged weights:", [round(w, 3) for w in train()])
