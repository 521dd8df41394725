"""The Torque-style ``qsub``/``qstat``/``qdel`` of Debian's slurm-wlm-torque, over the SLURM testbed.

Debian's ``slurm-wlm-torque`` conflicts with ``gridengine-client`` (both own
``/usr/bin/qsub``), so it is never dpkg-installed: :func:`start` downloads the
package with ``apt-get download``, unpacks it with ``dpkg-deb -x`` into
``/var/cache/clustrix-testbed/slurm-wlm-torque-<version>/`` and puts symlinks to
``sbatch``/``salloc``/``srun`` next to the wrappers (they run ``${FindBin::Bin}/sbatch``).
Its ``usr/bin`` goes first on ``PATH`` only for the Torque tests, through
:class:`TorqueTransport`. The cluster behind it is the shared SLURM testbed.

Where these wrappers are not Torque (see ``shared/testbed-notes.md``): no ``qstat -x``,
no ``exit_status`` in ``qstat -f``, no ``PBS_ARRAYID`` in the job (only SLURM's
variables), ``#PBS -o/-e`` in a script are ignored, ``qsub -W block=true`` exits 0
whatever the job did.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
from clustrix_openpbs_netns import WrappedLocalTransport

from tests.testbed import slurm
from tests.testbed.system import apt_install
from tests.testbed.transport_hook import TransportHook

CACHE_ROOT = Path(os.environ.get("CLUSTRIX_TESTBED_CACHE", "/var/cache/clustrix-testbed"))
WRAPPER_DEPS = ("libslurm-perl", "libslurmdb-perl", "libswitch-perl")
PACKAGE = "slurm-wlm-torque"
#: ``cluster_host`` that means "the login node, with the Torque-style wrappers first on PATH".
TORQUE_HOST = "torque-cli"


@attrs.frozen
class TorqueCLI:
    """The unpacked wrappers and the SLURM cluster they drive."""

    bin_dir: Path
    version: str
    cluster: slurm.SlurmTestbed

    def transport(self) -> TorqueTransport:
        return TorqueTransport(self.bin_dir)

    def transport_hook(self) -> TransportHook:
        return TransportHook(TORQUE_HOST, self.transport)


def candidate_version() -> str:
    out = subprocess.run(["apt-cache", "policy", PACKAGE], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"apt knows no {PACKAGE}: run apt-get update")


def unpack(version: str) -> Path:
    """Download and unpack the package once per version; returns its ``usr/bin``."""
    root = CACHE_ROOT / f"{PACKAGE}-{version}"
    bin_dir = root / "usr" / "bin"
    if (root / ".clustrix-unpacked").exists():
        return bin_dir
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="torque-deb-") as work:
        subprocess.run(["apt-get", "download", f"{PACKAGE}={version}"], cwd=work, check=True, capture_output=True)
        (deb,) = Path(work).glob("*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
    for tool in ("sbatch", "salloc", "srun"):
        link = bin_dir / tool
        if not link.exists():
            link.symlink_to(f"/usr/bin/{tool}")
    (root / ".clustrix-unpacked").write_text(version + "\n")
    return bin_dir


def start() -> TorqueCLI:
    cluster = slurm.start()
    apt_install(WRAPPER_DEPS)
    version = candidate_version()
    return TorqueCLI(bin_dir=unpack(version), version=version, cluster=cluster)


class TorqueTransport(WrappedLocalTransport):
    """The login node with the Torque-style wrappers first on ``PATH`` (for these tests only)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.host = TORQUE_HOST

    def wrap(self, argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
        return list(argv), {**(env or {}), "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
