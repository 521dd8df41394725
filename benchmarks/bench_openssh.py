"""Benchmark the two SSH clients side by side on SLURM: the OpenSSH transport against paramiko.

Run with ``nox -s bench`` (or ``python benchmarks/bench_openssh.py --output FILE`` as root in a
venv with clustrix-core, clustrix-slurm and clustrix-ssh). It starts the SLURM and sshd
testbeds of ``tests/testbed`` (or reuses a healthy cluster), and a delay proxy
(``tests/testbed/delay.py``) for the far link.

Contenders: clustrix-slurm through the sshd testbed with ``ssh_client="paramiko"`` and with
``ssh_client="openssh"`` (the system ``ssh`` over a master connection the transport opened in
batch mode, as a ``clustrix login`` master is used), each at a round trip of 0 ms (straight to
the sshd on 127.0.0.1) and of 80 ms (through the delay proxy: 40 ms each way).

Cases (issue 24), every contender in one run, runs interleaved round-robin on an idle cluster:

- ``single``: one warm call's round trip (submit, run, result back);
- ``map100``: a map of 100 trivial calls (one job array);
- ``command``: the cost of one remote command (``true``) on the warm transport, median of 30.

Figures are medians of ``--repeats`` runs (at least 5) with min and max. A benchmark reports
and never asserts.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.testbed brings the cluster and sshd up

import harness  # noqa: E402  (benchmarks/, the script's own folder)
from harness import Clustrix, print_figures  # noqa: E402

MAP_SIZE = 100
ROUND_TRIPS_MS = (0, 80)
CLIENTS = ("paramiko", "openssh")
COMMANDS = 30


def trivial(x: int) -> int:
    return x + 1


def command_cost(options: dict[str, Any]) -> dict[str, float]:
    """Seconds per ``true`` on the warm pooled transport of ``options`` (median, min, max of :data:`COMMANDS`)."""
    from clustrix.config.settings import resolve_config
    from clustrix.plugin.manager import transport_for

    transport = transport_for(resolve_config(overrides=options))
    transport.run(["true"], check=True)
    times = []
    for _ in range(COMMANDS):
        start = time.perf_counter()
        transport.run(["true"], check=True)
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": len(times)}


def main(argv: list[str] | None = None) -> int:
    output, repeats = harness.arguments(__doc__ or "", "benchmarks/results/openssh.json", argv)

    from bench_slurm import wait_until_idle

    from clustrix.config.settings import resolve_config
    from clustrix_ssh import client as ssh_client
    from tests.testbed import delay
    from tests.testbed import slurm as slurm_testbed
    from tests.testbed.sshd import start_sshd

    bed = slurm_testbed.start()
    server = start_sshd(slurm_testbed.TEST_USER)
    work = tempfile.mkdtemp(prefix="clustrix-bench-openssh-")
    os.environ.setdefault("CLUSTRIX_DATA_DIR", os.path.join(work, "registry"))
    os.environ.setdefault("CLUSTRIX_CONTROL_DIR", os.path.join(work, "cm"))
    proxy_port, proxy = delay.start(server.port, ROUND_TRIPS_MS[1])
    try:
        key_type, key = server.host_public_key.split()[:2]
        known_hosts = Path(work) / "known_hosts"
        known_hosts.write_text("".join(f"[127.0.0.1]:{port} {key_type} {key}\n" for port in (server.port, proxy_port)))
        ports = {0: server.port, ROUND_TRIPS_MS[1]: proxy_port}
        contenders: list[Clustrix] = []
        for rtt in ROUND_TRIPS_MS:
            for client in CLIENTS:
                options = server.config(
                    cluster_type="slurm",
                    cluster_port=ports[rtt],
                    known_hosts_file=str(known_hosts),
                    ssh_client=client,
                    ssh_config_file="/dev/null",  # the system ssh reads nothing of this machine's ~/.ssh
                    replicate_distributions=["clustrix-core"],
                    remote_work_dir="~/.clustrix/bench-openssh",
                )
                contenders.append(
                    Clustrix(
                        f"{client} {rtt} ms",
                        options,
                        f"clustrix-slurm over {client} to the sshd testbed at a {rtt} ms round trip",
                        trivial,
                        MAP_SIZE,
                    )
                )
        print(f"SLURM testbed {'reused' if bed.reused else 'started'}; sshd on {server.host}:{server.port}")
        print(f"delay proxy on 127.0.0.1:{proxy_port} ({ROUND_TRIPS_MS[1]} ms round trip)")
        single, mapped = harness.run_cases(
            contenders,
            contenders,
            repeats=repeats,
            expected_single=trivial(1),
            expected_map=[trivial(x) for x in range(MAP_SIZE)],
            wait_until_idle=wait_until_idle,
        )
        figures, _ = harness.figures_and_medians(single, mapped)
        figures["command"] = {c.name: command_cost(c.options) for c in contenders}
        chosen = {c.name: ssh_client.choose_client(resolve_config(overrides=c.options)).reason for c in contenders}
    finally:
        proxy.terminate()
        proxy.wait()
        server.cleanup()

    print_figures(f"SSH clients on SLURM: medians of {repeats} runs (min-max), seconds", figures)
    print("\nOpenSSH / paramiko, same round trip (median):")
    ratios = []
    for rtt in ROUND_TRIPS_MS:
        for case, data in figures.items():
            ratio = data[f"openssh {rtt} ms"]["median"] / data[f"paramiko {rtt} ms"]["median"]
            ratios.append({"case": case, "round_trip_ms": rtt, "openssh_over_paramiko": round(ratio, 3)})
            print(f"  {case:<8} {rtt:>3} ms  {ratio:5.2f}x")
    report = {
        "testbed": {"cpus": bed.cpus, "cgroups": bed.cgroups},
        "repeats": repeats,
        "round_trip": "0 ms: 127.0.0.1; 80 ms: tests/testbed/delay.py (40 ms each way; the kernel has no netem)",
        "contenders": {c.name: c.description for c in contenders},
        "decisions": chosen,
        "figures": figures,
        "ratios": ratios,
    }
    harness.write_report(output, "openssh", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
