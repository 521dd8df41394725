"""``fn.job_script`` on PBS: the flavour from the configuration, or PBS Pro with a note (never detected remotely)."""

from __future__ import annotations

from clustrix import cluster, registry


def cube(x):
    return x**3


def dry(**options):
    fn = cluster(
        cluster_type="pbs",
        cluster_host="pbs.example.invalid",  # nothing may connect: the host does not exist
        remote_work_dir="/scratch/me",
        python_executable="/opt/py/bin/python",
        **options,
    )(cube)
    return fn.job_script.map([1, 2, 3, 4])


def test_pbspro_and_torque_dry_runs_differ_as_their_array_syntax_does() -> None:
    pro, torque = dry(pbs_flavor="pbspro"), dry(pbs_flavor="torque")
    assert "#PBS -J 1-4" in str(pro.script).splitlines()
    assert "#PBS -t 1-4" in str(torque.script).splitlines()
    assert "PBS_ARRAY_INDEX" in str(pro.script) and "PBS_ARRAYID" in str(torque.script)
    for shown, name in ((pro, "pbspro"), (torque, "torque")):
        job_dir = f"/scratch/me/{shown.job_id}"
        assert shown.scheduler == "pbs" and shown.commands[0] == f"cd {job_dir}", name
        assert shown.commands[1].startswith("qsub ") and shown.commands[1].endswith(f" {job_dir}/job.pbs"), name
    assert not any("pbs_flavor" in note for note in pro.notes + torque.notes)
    assert registry.list_jobs() == []


def test_an_unset_flavour_is_shown_as_pbspro_and_the_note_says_how_to_see_torque() -> None:
    shown = dry()
    assert "#PBS -J 1-4" in str(shown.script).splitlines()
    assert any("pbs_flavor is not set" in note and "pbs_flavor='torque'" in note for note in shown.notes)
