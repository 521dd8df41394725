"""Benchmark replicating numpy + scipy + scikit-learn on a fresh host: from the index there, or wheels shipped here.

Run with ``nox -s bench`` or ``python benchmarks/bench_wheels.py --output FILE`` (as root:
the testbeds start a private sshd, and the OpenPBS complex in its network namespace; hold
``/tmp/cx-lock-pbs``).

Two hosts, both over SSH as the testbed's unprivileged user:

- **index**: the sshd testbed on this machine, whose ``python3`` reaches the package index
  (``remote_index="reachable"``: the venv is built there by pip from the index);
- **shipped**: the OpenPBS login node inside its network namespace, which has no route out
  (``remote_index="auto"``: the probe finds no index; wheels are downloaded here and shipped).

For each: **cold** is a fresh ``remote_work_dir`` (no venv, no wheelhouse: a new host), the
first shipped cold run also with an empty client download cache; **warm** is the next
process on the same host (the venv exists: one command, nothing shipped); **new env** is a
second environment on the same host sharing every wheel but one. Figures are seconds of
``prepare_remote_environment`` and the bytes of wheels shipped. Benchmarks report, they do
not assert. A cold build takes tens of seconds, so the default is one repeat.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import write_report  # noqa: E402

#: Pinned for CPython 3.11 on manylinux x86_64, the testbeds' python3.
STACK = [
    ("numpy", "2.2.6"),
    ("scipy", "1.15.3"),
    ("scikit-learn", "1.6.1"),
    ("joblib", "1.5.1"),
    ("threadpoolctl", "3.6.0"),
]
#: The "new env" case: the same stack plus one pure wheel the host does not have yet.
EXTRA = ("sortedcontainers", "2.4.0")


def snapshot(*pairs: tuple[str, str]) -> dict[str, Any]:
    from clustrix.remote.environment.capture import capture_environment, environment_hash

    snap = capture_environment(["cloudpickle"])
    snap["distributions"] += [{"name": n, "version": v, "source": "pypi"} for n, v in pairs]
    snap["hash"] = environment_hash(snap["python"], snap["distributions"])
    return snap


def measure(options: dict[str, Any], label: str, *, empty_client_cache: bool) -> list[dict[str, Any]]:
    import platformdirs

    from clustrix.config.settings import resolve_config
    from clustrix.plugin.manager import transport_for
    from clustrix.remote.environment.prepare import forget_prepared, prepare_remote_environment

    work = f"~/.clustrix/bench-wheels-{uuid.uuid4().hex[:8]}"
    config = resolve_config(overrides={**options, "remote_work_dir": work})
    transport = transport_for(config)
    if empty_client_cache:
        downloads = Path(platformdirs.user_cache_dir("clustrix")) / "downloads"
        if downloads.is_dir():
            for path in downloads.rglob("*.whl"):
                path.unlink()
    rows = []
    try:
        cases = (("cold", snapshot(*STACK)), ("warm", snapshot(*STACK)), ("new env", snapshot(*STACK, EXTRA)))
        for case, snap in cases:
            forget_prepared()  # every case is a new process
            start = time.perf_counter()
            env = prepare_remote_environment(transport, config, snap)
            seconds = time.perf_counter() - start
            check = transport.run([env.python, "-c", "import sklearn, scipy, numpy; print(sklearn.__version__)"])
            rows.append(
                {
                    "host": label,
                    "case": case + (" (client cache empty)" if empty_client_cache and case == "cold" else ""),
                    "seconds": round(seconds, 2),
                    "built": env.built,
                    "wheels_shipped": len(env.shipped_wheels),
                    "bytes_shipped": env.shipped_bytes,
                    "imports": check.stdout.strip() == "1.6.1",
                }
            )
            print(rows[-1], flush=True)
    finally:
        path = shlex.quote(transport.expand(work))
        transport.run(["sh", "-c", f"chmod -R u+w {path}; rm -rf {path}"], check=False)
        forget_prepared()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/wheels.json")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    notes = []
    try:
        from tests.testbed import openpbs
        from tests.testbed.sshd import start_sshd

        server = start_sshd()
        bed = openpbs.OpenPBS(prefix=openpbs.prefix_for(openpbs.tarball()), host=openpbs.host_name())
        if not Path(f"/run/netns/{openpbs.NETNS}").exists():  # the namespace and an sshd in it, not a free node
            bed = openpbs.start()
        pbs_ssh = openpbs.start_ssh(bed)
        try:
            for repeat in range(args.repeats):
                rows += measure(server.config(remote_index="reachable"), "index (sshd, reaches PyPI)",
                                empty_client_cache=False)  # fmt: skip
                rows += measure(pbs_ssh.config(cluster_type="ssh"), "shipped (OpenPBS login node, no route)",
                                empty_client_cache=repeat == 0)  # fmt: skip
                if repeat == 0:
                    rows += measure(pbs_ssh.config(cluster_type="ssh"), "shipped (OpenPBS login node, no route)",
                                    empty_client_cache=False)  # fmt: skip
        finally:
            pbs_ssh.stop()
            server.cleanup()
    except Exception:  # noqa: BLE001 - a benchmark reports, it does not fail
        notes.append(traceback.format_exc())
        print(notes[-1], file=sys.stderr)
    print(f"\n{'host':<42} {'case':<30} {'seconds':>8} {'wheels':>7} {'MB shipped':>11}")
    for row in rows:
        print(
            f"{row['host']:<42} {row['case']:<30} {row['seconds']:8.1f} {row['wheels_shipped']:7d} "
            f"{row['bytes_shipped'] / 1e6:11.1f}"
        )
    write_report(args.output, "wheels", {"stack": [f"{n}=={v}" for n, v in STACK], "rows": rows, "notes": notes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
