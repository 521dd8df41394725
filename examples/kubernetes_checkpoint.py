"""Tutorial 2 of docs/kubernetes.md: a fault-tolerant computation with backoff_limit and checkpoints.

The computation saves a checkpoint every few steps to a volume that outlives the pod
(a PersistentVolumeClaim on a real cluster). When the pod dies, the Job's
``backoffLimit`` starts a new pod, which resumes from the last checkpoint instead of
step 0. ``crash_at`` kills the first attempt on purpose, to show the resume.
"""

# skip-test: needs a Kubernetes cluster (tests/k8s/test_k8s_tutorials.py runs it against the testbed)

from __future__ import annotations

import json
import os

from clustrix import cluster, configure

#: Where the checkpoint volume is mounted in the pod.
CHECKPOINTS = "/checkpoints"


@cluster(backoff_limit=3, time="00:30:00")
def long_sum(n_steps: int, name: str, crash_at: int | None = None) -> dict[str, int]:
    """Sum 0..n_steps-1 one step at a time, checkpointing every 10 steps."""
    path = os.path.join(CHECKPOINTS, f"{name}.json")
    state = {"step": 0, "total": 0, "resumed_from": 0, "attempts": 0}
    if os.path.exists(path):
        with open(path) as fh:
            state = json.load(fh)
        state["resumed_from"] = state["step"]
    state["attempts"] += 1
    while state["step"] < n_steps:
        state["total"] += state["step"]
        state["step"] += 1
        if state["step"] % 10 == 0:
            tmp = path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(state, fh)
            os.replace(tmp, path)  # a checkpoint is written whole or not at all
        if crash_at is not None and state["step"] == crash_at and state["attempts"] == 1:
            os._exit(137)  # the pod dies (node lost, evicted, OOM...): no result, no exception
    return state


def checkpoint_volume(claim: str = "checkpoints") -> dict[str, object]:
    """The configuration that mounts a PersistentVolumeClaim at :data:`CHECKPOINTS` in every pod."""
    return {
        "volumes": [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": claim}}],
        "volume_mounts": [{"name": "checkpoints", "mountPath": CHECKPOINTS}],
    }


if __name__ == "__main__":
    configure(cluster_type="kubernetes", **checkpoint_volume())
    print(long_sum(1000, "demo", crash_at=500))
