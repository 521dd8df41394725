"""Benchmark shipping the user's own code (``clustrix.remote.localcode``) to the testbed sshd.

Run with ``nox -s bench`` or ``python benchmarks/bench_localcode.py --output FILE`` (as root:
the testbed, tests/testbed/sshd.py, creates a user and starts a private sshd on 127.0.0.1).

In one run, with the two-file project of the tests plus a package of ``--files`` modules:

(a) detection: pickling a ``.map()`` payload of 10,000 calls whose argument is a local
    class, with the recording pickler against the plain one (medians of ``--repeats``),
    and planning the units (first time: files read and hashed; again: stat only);
(b) shipping: the first submit of a new project (probe + send + unpack + import check),
    a new process whose project is unchanged (one probe command, nothing sent), and a
    second submit in the same process (no command), with the bytes sent.

Benchmarks report, they do not assert: the exit code is 0 even when the testbed cannot start.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def median_ms(action: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/localcode.json")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--files", type=int, default=200, help="modules in the extra package")
    args = parser.parse_args()

    from clustrix.config.settings import resolve_config
    from clustrix.remote import runner
    from clustrix.remote.environment.capture import capture_environment
    from clustrix.remote.environment.prepare import prepare_remote_environment
    from clustrix.remote.localcode import shipping
    from clustrix.remote.localcode.detection import dumps_recording
    from clustrix.remote.localcode.plan import plan_code
    from clustrix.remote.localcode.shipping import ShippedCode, forget_shipped
    from clustrix.remote.localcode.units import archive
    from clustrix_ssh import get_transport
    from tests.localcode_projects import write_project
    from tests.testbed.sshd import start_sshd

    results: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "files_in_extra_package": args.files,
    }
    folder = write_project(Path(tempfile.mkdtemp(prefix="clustrix-bench-")) / "project")
    extra = folder / "bigpkg"
    extra.mkdir()
    (extra / "__init__.py").write_text(f"# {time.time_ns()}\n")  # new content each run: the first submit sends it
    for index in range(args.files):
        (extra / f"m{index}.py").write_text(f"VALUE = {index}\n" + "# padding\n" * 200)
    (folder / "mylib.py").write_text((folder / "mylib.py").read_text().replace("import mypkg", "import mypkg, bigpkg"))
    sys.path.insert(0, str(folder))
    mylib = importlib.import_module("mylib")
    payload = {"func": mylib.run.func, "arguments": [((mylib.Point(i),), {}) for i in range(10_000)]}

    plain, recording = [], []
    for _ in range(args.repeats):  # alternated, so load on the machine hits both alike
        plain.append(median_ms(lambda: runner.dumps(payload), 1))
        recording.append(median_ms(lambda: dumps_recording(payload), 1))
    results["pickle_10000_calls_plain_ms"] = statistics.median(plain)
    results["pickle_10000_calls_recording_ms"] = statistics.median(recording)
    _, referenced = dumps_recording(payload)
    started = time.perf_counter()
    plan = plan_code(referenced, None, needs=())
    results["plan_first_ms"] = round((time.perf_counter() - started) * 1000, 2)
    results["plan_again_ms"] = median_ms(lambda: plan_code(referenced, None, needs=()), args.repeats)
    results["units"] = [{"label": u.label, "bytes": u.size} for u in plan.units]
    results["archive_bytes"] = len(archive(plan.units))

    try:
        server = start_sshd()
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not fail
        results["error"] = f"testbed: {type(exc).__name__}: {exc}"
        traceback.print_exc()
    else:
        try:
            options = server.config(replicate_distributions=["clustrix-core"], remote_work_dir="~/.clustrix/bench")
            config = resolve_config(overrides=options)
            transport = get_transport(
                server.host, port=server.port, user=server.user, key_file=server.key_file,
                known_hosts_file=server.known_hosts,
            )  # fmt: skip
            env = prepare_remote_environment(transport, config, capture_environment(["clustrix-core"]))

            def ship() -> ShippedCode:
                return shipping.ship(transport, config, plan, python=env.python, prelude=env.prelude)

            for name, forget in (("first_submit", True), ("new_process_unchanged", True), ("same_process", False)):
                if forget:
                    forget_shipped()
                started = time.perf_counter()
                shipped = ship()
                results[f"ship_{name}_ms"] = round((time.perf_counter() - started) * 1000, 1)
                results[f"ship_{name}_units_sent"] = len(shipped.sent)
        finally:
            server.cleanup()

    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in results)
    for key, value in results.items():
        if key != "units":
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
