"""The job script is a pure function of the job, its resources and the site settings, checked against golden files.

Set ``CLUSTRIX_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change.
The golden scripts are also handed to the real ``qsub -w v`` (verify, never submit).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from clustrix.batch.dialect import ScriptJob
from clustrix.config.resources import Resources
from clustrix_sge import script
from clustrix_sge.dialect import SGEDialect
from tests import golden
from tests.resource_forms import TIME_FORMS, TimeForm
from tests.sge.conftest import GOLDEN
from tests.testbed import sge as sge_testbed

JOB_DIR = "/home/me/.clustrix/20250101-000000-abcdefabcdef"
DIALECT = SGEDialect()


class Config(dict):
    """Stands for a ClusterConfig: only ``get`` is used."""


def job(resources: Resources, *, n_tasks: int = 1, n_calls: int = 1, config=None, **kw) -> ScriptJob:
    return ScriptJob(
        job_id="20250101-000000-abcdefabcdef",
        name=kw.pop("name", "monte_carlo"),
        job_dir=kw.pop("job_dir", JOB_DIR),
        n_tasks=n_tasks,
        n_calls=n_calls,
        resources=resources,
        python="/opt/py/bin/python3",
        runner_path=f"{JOB_DIR}/clustrix_runner.py",
        config=config,
        **kw,
    )


def check_golden(name: str, text: str) -> None:
    golden.check_golden(GOLDEN, name, text)


def render(resources: Resources, **kw) -> str:
    DIALECT.validate(resources)
    return DIALECT.render_script(job(resources, **kw))


def test_single_call_script_matches_golden_file():
    check_golden("single_call.sge", render(Resources.parse(cores=4, memory="32GB", time="04:00:00")))


def test_array_with_every_option_matches_golden_file():
    resources = Resources.parse(
        cores=2,
        memory="4GiB",
        time="1-12:00:00",
        queue="all.q",
        project="clustrix",
        account="lab-42",
        job_name="sample pipeline",
        memory_resources=["h_vmem", "mem_free"],
        sge_directives=["-l scratch=10G", "-m ea"],
    )
    text = render(
        resources,
        n_tasks=40,
        n_calls=100,
        max_parallel=8,
        prelude=("module load samtools/1.17", "export GREETING='it'\"'\"'s $HOME'"),
    )
    check_golden("array_all_options.sge", text)


def test_no_requeue_and_no_limits_matches_golden_file():
    check_golden("minimal_no_requeue.sge", render(Resources.parse(requeue=False), name="f"))


def test_memory_is_the_jobs_total_split_over_its_slots_and_given_to_each_configured_complex():
    text = render(Resources.parse(cores=4, memory="8GiB"), config=Config(sge_memory_resources=["mem_free", "s_vmem"]))
    assert "#$ -pe smp 4" in text
    assert "#$ -l mem_free=2048M" in text
    assert "#$ -l s_vmem=2048M" in text
    assert "h_vmem" not in text
    # one slot: no PE at all (a site may have none), the whole memory on the one slot
    single = render(Resources.parse(memory="3GB"))
    assert "-pe" not in single
    assert "#$ -l h_vmem=2862M" in single  # 3e9 bytes, rounded up to whole MiB
    assert script.per_slot_megabytes(1, 64) == 1


def test_the_parallel_environment_comes_from_the_extra_then_the_site_setting_then_smp():
    assert "#$ -pe mpi 8" in render(Resources.parse(cores=8, pe="mpi"), config=Config(sge_pe="threads"))
    assert "#$ -pe threads 8" in render(Resources.parse(cores=8), config=Config(sge_pe="threads"))
    assert "#$ -pe smp 8" in render(Resources.parse(cores=8))


def test_time_is_h_rt_in_hours_beyond_a_day_and_partition_is_a_queue():
    assert script.format_h_rt(36 * 3600 + 61) == "36:01:01"
    assert "#$ -l h_rt=0:00:59" in render(Resources.parse(time="00:00:59"))
    assert "#$ -q all.q" in render(Resources.parse(partition="all.q"))


def test_every_map_is_an_array_so_the_task_id_is_never_undefined():
    text = render(Resources.parse(), n_tasks=1)
    assert "#$ -t 1-1" in text
    assert '--task "$(( ${SGE_TASK_ID:-1} - 1 ))"' in text
    assert "#$ -t 1-250" in render(Resources.parse(), n_tasks=250, n_calls=1000)
    assert "-tc" not in render(Resources.parse(), n_tasks=4, n_calls=4, max_parallel=8)


def test_output_paths_are_fresh_per_job_and_task_in_the_job_directory():
    text = render(Resources.parse())
    assert f"#$ -o '{JOB_DIR}/sge-$JOB_ID.$TASK_ID.out'" in text
    assert f"#$ -e '{JOB_DIR}/sge-$JOB_ID.$TASK_ID.err'" in text
    assert DIALECT.log_name("77", 3, "stdout") == "sge-77.3.out"
    assert DIALECT.log_name("77", 3, "stderr") == "sge-77.3.err"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("monte carlo", "monte_carlo"), ("<lambda>", "_lambda_"), ("ok.name-1+x", "ok.name-1+x"), ("", "monte_carlo")],
)
def test_the_job_name_is_always_given_and_safe(name, expected):
    text = render(Resources.parse(**({"job_name": name} if name else {})))
    assert f"#$ -N {expected}\n" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"account": "my account"}, "account='my account' is not valid"),
        ({"project": "a,b"}, "project='a,b' is not valid"),
        ({"pe": ""}, "pe='' is not valid"),
        ({"memory_resources": "h_vmem"}, "memory_resources='h_vmem' is not valid"),
        ({"memory_resources": ["h vmem"]}, "memory_resources item 'h vmem' is not valid"),
        ({"sge_directives": "-l x=1"}, "sge_directives='-l x=1' is not valid"),
        ({"sge_directives": ["l x=1"]}, "sge_directives item 'l x=1' is not valid"),
        ({"sge_directives": ["-l x=1\n-q y"]}, "is not valid: use one qsub option per item"),
        ({"requeue": "yes"}, "requeue='yes' is not valid"),
        ({"job_name": "a\nb"}, "job_name='a\\nb' is not valid"),
        ({"queue": "all q"}, "queue='all q' is not valid"),
        ({"gpus": 1}, "gpus=1: SGE cannot limit gpus"),
        ({"qos": "high"}, "SGE does not understand 'qos'; its options are: account, calls_per_task"),
        ({"queue": "a.q", "partition": "b.q"}, "disagree: they name the same thing"),
    ],
)
def test_bad_options_are_refused_naming_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=_escape(message)):
        DIALECT.validate(Resources.parse(**kwargs))


def test_bad_site_settings_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="sge_pe='my pe' is not valid"):
        render(Resources.parse(cores=2), config=Config(sge_pe="my pe"))
    with pytest.raises(ValueError, match="sge_memory_resources item '' is not valid"):
        render(Resources.parse(memory="1GB"), config=Config(sge_memory_resources=[""]))


@pytest.mark.parametrize("job_dir", ["/home/me/a:b/job", "/home/$USER/job"])
def test_a_job_directory_that_grid_engine_would_misread_is_refused(job_dir):
    with pytest.raises(ValueError, match="choose a remote_work_dir without ':' or '\\$'"):
        render(Resources.parse(), job_dir=job_dir)


def test_site_environment_is_set_for_every_command_only_when_configured():
    assert DIALECT.command_environment(Config()) == {}
    assert DIALECT.command_environment(Config(sge_root="/opt/sge", sge_cell="hpc")) == {
        "SGE_ROOT": "/opt/sge",
        "SGE_CELL": "hpc",
    }


def test_requeue_exports_qmod_rj_of_this_task_and_traps_the_notify_signal():
    text = render(Resources.parse(time="00:10:00"))
    assert "#$ -r y\n#$ -notify\n" in text
    assert "trap '' USR2\n" in text
    assert 'export CLUSTRIX_REQUEUE_ARGV="[\\"qmod\\", \\"-rj\\", \\"${JOB_ID}.${SGE_TASK_ID}\\"]"' in text
    off = render(Resources.parse(time="00:10:00", requeue=False))
    assert "#$ -r n\n" in off
    assert "-notify" not in off and "CLUSTRIX_REQUEUE_ARGV" not in off and "trap" not in off


@pytest.mark.testbed_sge
@pytest.mark.parametrize("golden", ["single_call.sge", "array_all_options.sge", "minimal_no_requeue.sge"])
def test_grid_engine_accepts_the_golden_scripts(sge_cell, tmp_path, golden):
    """``qsub -w v``: the real qmaster parses every directive and finds a queue that could run it."""
    text = (GOLDEN / golden).read_text().replace(JOB_DIR, str(tmp_path))
    # a site complex the testbed does not define; mem_free is a load value here, not a consumable
    # (qsub -w v then finds no PE slots for it), so the verified script asks s_vmem in its place
    text = text.replace("#$ -l scratch=10G\n", "").replace("#$ -l mem_free=", "#$ -l s_vmem=")
    path = tmp_path / golden
    path.write_text(text)
    env = {**os.environ, **sge_testbed.ENV}
    proc = subprocess.run(["qsub", "-w", "v", str(path)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "verification: found suitable queue(s)" in proc.stdout


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_every_sge_keyword_is_accepted_at_decoration_and_a_typo_is_refused_with_a_suggestion() -> None:
    from clustrix import cluster

    extras = {"project": "genomics", "pe": "mpi", "memory_resources": ["h_vmem"], "sge_directives": ["-m ea"]}

    @cluster(cluster_type="sge", **extras)
    def f() -> None: ...

    assert f.resources.extra == extras
    with pytest.raises(ValueError, match=r"unknown keyword projct='genomics'.*did you mean 'project'\?"):
        cluster(cluster_type="sge", projct="genomics")


@pytest.mark.parametrize("form", TIME_FORMS, ids=lambda f: repr(f.given))
def test_every_documented_time_form_becomes_the_h_rt_grid_engine_reads(form: TimeForm):
    assert f"#$ -l h_rt={form.sge}\n" in render(Resources.parse(time=form.given))


def test_a_partition_and_a_queue_that_disagree_are_refused_like_on_every_scheduler():
    with pytest.raises(ValueError, match=r"partition='a.q' and queue='b.q' disagree: they name the same thing"):
        DIALECT.validate(Resources(partition="a.q", queue="b.q"))
