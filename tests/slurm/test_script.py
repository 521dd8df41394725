"""The sbatch script is a pure function of the job, checked against golden files.

The scripts are rendered exactly as the engine renders them in production: the SLURM
dialect's directives, core's environment prelude (:func:`clustrix.remote.environment.activation.activation_lines`)
and the runner file shipped into the job directory. Set ``CLUSTRIX_UPDATE_GOLDEN=1`` to
rewrite the golden files after an intended change.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest

from clustrix.batch.dialect import ScriptJob
from clustrix.batch.submit import RUNNER_NAME
from clustrix.config.resources import Resources
from clustrix.errors import ConfigurationError
from clustrix.remote.environment.activation import activation_lines
from clustrix_slurm.dialect import SlurmDialect
from clustrix_slurm.script import array_spec, memory_megabytes
from tests import golden
from tests.resource_forms import TIME_FORMS, TimeForm
from tests.slurm.conftest import GOLDEN

JOB_DIR = "/home/me/.clustrix/20250101-000000-abcdefabcdef"
DIALECT = SlurmDialect()


def render(
    resources: Resources,
    *,
    prelude: list[str] | None = None,
    python: str = "/opt/py/bin/python3",
    n_tasks: int = 1,
    n_calls: int = 1,
    name: str = "monte_carlo",
    max_parallel: int | None = None,
) -> str:
    DIALECT.validate(resources)
    job = ScriptJob(
        job_id="20250101-000000-abcdefabcdef",
        name=name,
        job_dir=JOB_DIR,
        n_tasks=n_tasks,
        n_calls=n_calls,
        resources=resources,
        python=python,
        prelude=tuple(prelude or ()),
        runner_path=f"{JOB_DIR}/{RUNNER_NAME}",
        max_parallel=max_parallel,
    )
    return DIALECT.render_script(job)


def check_golden(name: str, text: str) -> None:
    golden.check_golden(GOLDEN, name, text)


def test_single_call_script_matches_golden_file():
    resources = Resources.parse(cores=16, memory="32GB", time="04:00:00", partition="compute")
    check_golden("single_call.sbatch", render(resources))


def test_throttled_array_with_every_option_matches_golden_file():
    resources = Resources.parse(
        cores=2,
        memory="4GiB",
        time="1-12:00:00",
        queue="gpu",
        gpus=2,
        account="proj 42",
        qos="high",
        constraint="a100&ib",
        reservation="maint",
        gpu_type="a100",
        exclusive=True,
        sbatch_directives=["--licenses=matlab:1", "--mail-type=END"],
    )
    prelude = activation_lines(
        module_loads=("gcc/12.2", "cuda/12"),
        conda_env_name="sim env",
        pre_execution_commands=("source ~/site.sh", "ulimit -c 0"),
        environment_variables={"OMP_NUM_THREADS": "2", "GREETING": "it's $HOME"},
    )
    text = render(
        resources,
        prelude=prelude,
        python="/opt/my env/bin/python",
        n_tasks=100,
        n_calls=1000,
        name="hyper param search",
        max_parallel=10,
    )
    check_golden("array_all_options.sbatch", text)


def test_no_requeue_and_no_resources_gives_a_minimal_script():
    check_golden("minimal_no_requeue.sbatch", render(Resources.parse(requeue=False)))


def test_rendered_script_is_valid_bash():
    resources = Resources.parse(cores=1, account="a'b\"c", sbatch_directives=["--comment=x y"])
    prelude = activation_lines(environment_variables={"X": "$(rm -rf /) `id` 'q'"}, module_loads=("a;b",))
    script = render(resources, prelude=prelude)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "export X=" + shlex.quote("$(rm -rf /) `id` 'q'") in script
    assert "module load 'a;b'" in script


def test_the_requeue_argv_reaches_the_runner_as_json_with_the_task_expanded():
    script = render(Resources())
    [line] = [x for x in script.splitlines() if x.startswith("export CLUSTRIX_REQUEUE_ARGV=")]
    shown = subprocess.run(
        ["bash", "-c", f'{line}\nprintf %s "$CLUSTRIX_REQUEUE_ARGV"'],
        env={"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout) == ["scontrol", "requeue", "77_3"]


def test_memory_is_rounded_up_to_whole_mebibytes():
    assert memory_megabytes(32 * 1000**3) == 30518
    assert memory_megabytes(1) == 1
    assert memory_megabytes(4 * 1024**3) == 4096


def test_array_throttle_only_when_it_limits_something():
    assert array_spec(100, 10) == "0-99%10"
    assert array_spec(5, 10) == "0-4"
    assert array_spec(1, None) == "0-0"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"acount": "x"}, "'acount'"),
        ({"account": ""}, "account="),
        ({"exclusive": "yes"}, "exclusive="),
        ({"sbatch_directives": "--licenses=x"}, "sbatch_directives="),
        ({"sbatch_directives": ["licenses=x"]}, "licenses=x"),
        ({"sbatch_directives": ["--a\n#SBATCH --b"]}, "sbatch_directives item"),
        ({"calls_per_task": 0}, "calls_per_task="),
    ],
)
def test_resources_sbatch_cannot_express_are_refused_naming_the_parameter(extra, message):
    with pytest.raises(ValueError, match=message.replace("\n", "")):
        DIALECT.validate(Resources.parse(**extra))


def test_environment_variable_names_must_be_shell_names():
    with pytest.raises(ConfigurationError, match="BAD-NAME"):
        activation_lines(environment_variables={"BAD-NAME": "1"})


def test_the_task_runs_the_shipped_runner_file_with_its_slurm_array_index():
    script = render(Resources())
    assert script.splitlines()[-1] == (
        f'exec /opt/py/bin/python3 {JOB_DIR}/{RUNNER_NAME} {JOB_DIR} --task "${{SLURM_ARRAY_TASK_ID:-0}}"'
    )
    assert "-m clustrix.remote.runner" not in script


def test_every_slurm_keyword_is_accepted_at_decoration_and_a_typo_is_refused_with_a_suggestion() -> None:
    from clustrix import cluster
    from clustrix_slurm.script import EXTRA_KEYS

    @cluster(cluster_type="slurm", account="proj", qos="high", constraint="skylake", calls_per_task=4)
    def f() -> None: ...

    assert f.resources.extra == {"account": "proj", "qos": "high", "constraint": "skylake", "calls_per_task": 4}
    assert {"account", "qos", "sbatch_directives", "signal_delay"} <= set(EXTRA_KEYS)
    with pytest.raises(ValueError, match=r"unknown keyword acount='proj'.*did you mean 'account'\?"):
        cluster(cluster_type="slurm", acount="proj")


@pytest.mark.parametrize("form", TIME_FORMS, ids=lambda f: repr(f.given))
def test_every_documented_time_form_becomes_the_time_sbatch_reads(form: TimeForm):
    assert f"#SBATCH --time={form.slurm}\n" in render(Resources.parse(time=form.given))


def test_a_partition_and_a_queue_that_disagree_are_refused_not_one_dropped():
    with pytest.raises(ValueError, match=r"partition='a' and queue='b' disagree: they name the same thing"):
        DIALECT.validate(Resources(partition="a", queue="b"))
    assert "#SBATCH --partition=a\n" in render(Resources.parse(partition="a", queue="a"))
