from __future__ import annotations

from pathlib import Path

import pytest

from clustrix import cluster, configure, get_config
from clustrix.config.settings import resolve_config
from clustrix.errors import ConfigurationError

PROFILES = """
remote_work_dir = "/scratch/me"
job_poll_interval = 7

[profiles.hpc]
cluster_type = "slurm"
cluster_host = "login.hpc.example"
default_partition = "gpu"
module_loads = ["cuda/12"]

[profiles.k8s]
cluster_type = "kubernetes"
job_poll_interval = 2
"""


@pytest.fixture
def config_file(isolated_clustrix: Path) -> Path:
    path = isolated_clustrix / "config.toml"
    path.write_text(PROFILES)
    return path


def test_nothing_configured_means_the_local_executor() -> None:
    config = get_config()
    assert config.cluster_type == "local"
    assert config.remote_work_dir == "~/.clustrix"


def test_configure_sets_the_original_keys() -> None:
    configure(cluster_type="slurm", cluster_host="my-slurm-cluster", username="me", key_file="~/.ssh/clustrix_key")
    config = get_config()
    assert (config.cluster_type, config.cluster_host, config.username) == ("slurm", "my-slurm-cluster", "me")


def test_unknown_key_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown configuration key 'clustr_type'"):
        configure(clustr_type="slurm")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("cluster_port", "22", "cluster_port='22'"),
        ("job_poll_interval", 0, "job_poll_interval=0"),
        ("executor", "gpu", "executor='gpu'.*'thread'"),
        ("default_memory", "lots", "default_memory='lots'"),
        ("default_time", "1 hour", "default_time='1 hour'"),
        ("module_loads", [1], "module_loads"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(key: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        configure(**{key: value})


def test_file_top_level_keys_apply_and_profiles_are_picked_by_name(config_file: Path) -> None:
    assert get_config().remote_work_dir == "/scratch/me"
    assert get_config().job_poll_interval == 7
    configure(profile="hpc")
    config = get_config()
    assert (config.cluster_type, config.default_partition, config.module_loads) == ("slurm", "gpu", ["cuda/12"])


def test_a_function_profile_overrides_the_process_profile_for_that_function_only(config_file: Path) -> None:
    configure(profile="hpc")

    @cluster(profile="k8s")
    def on_k8s() -> None: ...

    @cluster
    def on_hpc() -> None: ...

    assert on_k8s.config().cluster_type == "kubernetes"
    assert on_k8s.config().job_poll_interval == 2
    assert on_hpc.config().cluster_type == "slurm"


def test_an_undefined_profile_names_the_file_and_the_table_to_add(config_file: Path) -> None:
    with pytest.raises(
        ConfigurationError, match=r"profile='gpu' is not defined in .*config.toml; add a \[profiles.gpu\]"
    ):
        resolve_config(profile="gpu")


def test_configure_with_an_undefined_profile_raises_and_leaves_the_process_usable(config_file: Path) -> None:
    with pytest.raises(ConfigurationError, match="profile='nope' is not defined"):
        configure(profile="nope")
    assert get_config().profile is None
    configure(profile="hpc")
    assert get_config().cluster_type == "slurm"


@pytest.mark.parametrize("given", ["numpy, attrs", ["numpy", "attrs"], ("numpy", "attrs")])
def test_replicate_distributions_takes_a_comma_separated_string_or_a_list(given: object) -> None:
    configure(replicate_distributions=given)
    assert get_config().get("replicate_distributions") == ["numpy", "attrs"]


def test_replicate_distributions_from_the_environment_is_split_at_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTRIX_REPLICATE_DISTRIBUTIONS", "numpy,attrs")
    assert get_config().get("replicate_distributions") == ["numpy", "attrs"]


def test_unknown_key_in_the_file_names_it_and_the_file(isolated_clustrix: Path) -> None:
    (isolated_clustrix / "config.toml").write_text('[profiles.x]\nclustertype = "slurm"\n')
    with pytest.raises(ConfigurationError, match=r"'clustertype' in \[profiles.x\]"):
        resolve_config(profile="x")


def test_environment_variables_override_everything(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(profile="hpc", job_poll_interval=3.0)
    monkeypatch.setenv("CLUSTRIX_CLUSTER_TYPE", "local")
    monkeypatch.setenv("CLUSTRIX_JOB_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("CLUSTRIX_MODULE_LOADS", '["gcc/12", "openmpi"]')
    monkeypatch.setenv("CLUSTRIX_CLEANUP_ON_SUCCESS", "yes")
    config = get_config()
    assert config.cluster_type == "local"
    assert config.job_poll_interval == 0.5
    assert config.module_loads == ["gcc/12", "openmpi"]
    assert config.cleanup_on_success is True


def test_profile_can_come_from_the_environment(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTRIX_PROFILE", "k8s")
    assert get_config().cluster_type == "kubernetes"


def test_passwords_are_left_out_of_the_printable_configuration() -> None:
    configure(password="hunter2")
    assert "password" not in get_config().as_dict()
    assert get_config().as_dict(include_secrets=True)["password"] == "hunter2"


def test_cluster_keywords_that_are_config_keys_configure_that_function() -> None:
    @cluster(cores=2, cluster_type="local", executor="thread", testsched_priority=3)
    def f() -> None: ...

    assert f.config().executor == "thread"
    assert f.resources.extra == {"testsched_priority": 3}
    with pytest.raises(ValueError, match="executor='gpu'"):
        cluster(executor="gpu")(f.func)


# -- issue 19, row 3: a profile and the keys given with it ------------------------------------------


def test_keys_given_with_a_profile_win_over_that_profile(config_file: Path) -> None:
    configure(profile="hpc", cluster_host="other")
    config = get_config()
    assert (config.profile, config.cluster_type, config.cluster_host) == ("hpc", "slurm", "other")


def test_configure_keys_win_over_the_process_profile_in_either_order(config_file: Path) -> None:
    configure(default_partition="debug")
    configure(profile="hpc")
    assert get_config().default_partition == "debug"
    configure(module_loads=["gcc/13"])
    assert get_config().module_loads == ["gcc/13"]
    assert get_config().cluster_host == "login.hpc.example"


def test_profile_none_deselects_the_profile_and_keeps_the_configured_keys(config_file: Path) -> None:
    configure(profile="hpc", username="me")
    assert get_config().cluster_type == "slurm"
    configure(profile=None)
    config = get_config()
    assert (config.profile, config.cluster_type, config.cluster_host, config.username) == (None, "local", None, "me")


def test_a_function_profile_still_beats_the_configured_keys(config_file: Path) -> None:
    configure(cluster_type="local", job_poll_interval=3.0)

    @cluster(profile="k8s")
    def on_k8s() -> None: ...

    assert (on_k8s.config().cluster_type, on_k8s.config().job_poll_interval) == ("kubernetes", 2)
    assert get_config().cluster_type == "local"


def test_reset_config_and_the_precedence_are_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    assert "reset_config()" in text
    assert "profile=None" in text
    assert "keys given to `configure()` win over the process-wide profile" in text


# -- issue 19, row 9: declared types, and unknown keys anywhere in the file ------------------------


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (
            {"remote_work_dir": 5},
            r"remote_work_dir=5 in configure\(\) is not valid: remote_work_dir takes str \| PathLike, not int",
        ),
        ({"cluster_host": 5}, r"cluster_host=5 .*takes str \| None, not int"),
        ({"cleanup_on_success": "yes"}, r"cleanup_on_success='yes' .*takes bool, not str"),
        ({"default_cores": "4"}, r"default_cores='4' .*takes int \| None, not str"),
        ({"environment_variables": {"A": [1]}}, r"environment_variables=\{'A': \[1\]\} .*takes dict\[str, "),
        ({"executor": "yes"}, r"executor='yes' .*takes 'auto' \| 'process' \| 'thread'$"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_key_and_its_type(settings: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        configure(**settings)
    assert get_config().remote_work_dir == "~/.clustrix"


def test_a_wrong_type_in_cluster_keywords_is_refused_at_decoration() -> None:
    with pytest.raises(
        ValueError, match=r"remote_work_dir=5 in @cluster\(\.\.\.\) is not valid: .*takes str \| PathLike"
    ):
        cluster(remote_work_dir=5)(lambda: None)


def test_a_wrong_type_in_the_config_file_names_the_file_and_the_line(isolated_clustrix: Path) -> None:
    path = isolated_clustrix / "config.toml"
    path.write_text('cluster_port = "22"\n')
    with pytest.raises(ConfigurationError, match=rf"cluster_port='22' in {path}, line 1 is not valid: .*takes int"):
        get_config()
    path.write_text('remote_work_dir = "/scratch"\n\n[profiles.hpc]\ncluster_type = "slurm"\n  "remote_work_dir" = 5\n')
    with pytest.raises(
        ConfigurationError, match=rf"remote_work_dir=5 in \[profiles.hpc\] of {path}, line 5 is not valid: .*takes str"
    ):
        get_config()


def test_a_wrong_type_in_a_dotted_key_of_the_file_is_found_on_its_line(isolated_clustrix: Path) -> None:
    path = isolated_clustrix / "config.toml"
    path.write_text('[profiles]\nhpc.cluster_type = "slurm"\nhpc.job_poll_interval = "5s"\n')
    with pytest.raises(ConfigurationError, match=r"job_poll_interval='5s' in \[profiles.hpc\] of .*, line 3 "):
        get_config()


def test_the_line_is_found_past_comments_and_multi_line_arrays(isolated_clustrix: Path) -> None:
    path = isolated_clustrix / "config.toml"
    path.write_text(
        '[profiles.hpc]   # the cluster\nmodule_loads = [\n  "gcc",\n]\npre_execution_commands = [\n  ["nested"],\n]\n'
    )
    with pytest.raises(
        ConfigurationError, match=r"pre_execution_commands=\[\['nested'\]\] in \[profiles.hpc\] of .*, line 5 "
    ):
        get_config()


def test_an_unknown_key_in_a_profile_not_selected_is_reported_with_a_suggestion(isolated_clustrix: Path) -> None:
    path = isolated_clustrix / "config.toml"
    path.write_text('[profiles.hpc]\ncluster_type = "slurm"\n\n[profiles.spare]\nclustr_host = "login"\n')
    with pytest.raises(
        ConfigurationError,
        match=rf"unknown configuration key 'clustr_host' in \[profiles.spare\] of {path}, line 5 "
        r"\(did you mean 'cluster_host'\?\)",
    ):
        get_config()


def test_a_wrong_type_in_an_environment_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTRIX_CLUSTER_PORT", "twenty-two")
    with pytest.raises(
        ConfigurationError, match=r"CLUSTRIX_CLUSTER_PORT='twenty-two' is not valid: cluster_port takes int"
    ):
        get_config()


def test_environment_text_is_read_as_the_declared_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTRIX_DEFAULT_CORES", "4")
    monkeypatch.setenv("CLUSTRIX_MAX_PARALLEL_JOBS", "none")
    monkeypatch.setenv("CLUSTRIX_PROGRESS", "auto")
    monkeypatch.setenv("CLUSTRIX_DEFAULT_MEMORY", "2GB")
    monkeypatch.setenv("CLUSTRIX_EXECUTOR", "thread")
    config = get_config()
    assert (config.default_cores, config.max_parallel_jobs, config.progress) == (4, None, None)
    assert (config.default_memory, config.executor) == ("2GB", "thread")


def test_every_key_of_core_and_of_each_installed_project_plugin_declares_a_type_and_what_it_does() -> None:
    from typing import Any

    from clustrix.config.settings import declarations
    from clustrix.plugin.manager import KNOWN_DISTRIBUTIONS

    project = {"clustrix-core", *KNOWN_DISTRIBUTIONS.values()}
    for distribution, keys in declarations():
        if distribution not in project:
            continue
        for name, key in keys.items():
            assert key.type not in (Any, object), f"{distribution} declares {name} without a type"
            assert key.help, f"{distribution} declares {name} without saying what it does"


def test_a_plugin_key_of_the_wrong_type_is_refused_naming_the_type() -> None:
    pytest.importorskip("clustrix_k8s")
    with pytest.raises(
        ConfigurationError, match=r"namespace=5 in configure\(\) is not valid: namespace takes str \| None"
    ):
        configure(namespace=5)


# -- issue 19: the configuration reference is generated from the declared keys -------------------


def test_the_configuration_reference_page_is_the_rendering_of_every_declared_key() -> None:
    import importlib.metadata

    from clustrix.config.settings import reference_page
    from clustrix.plugin.manager import KNOWN_DISTRIBUTIONS

    for distribution in sorted(set(KNOWN_DISTRIBUTIONS.values())):
        try:
            importlib.metadata.distribution(distribution)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{distribution} is not installed: the page documents every distribution (tests-all)")
    page = Path(__file__).parents[2] / "docs" / "configuration-reference.md"
    assert page.read_text() == reference_page(), (
        "docs/configuration-reference.md is out of date: regenerate it with "
        ".nox/tests-all/bin/python scripts/config_reference.py"
    )


def test_the_configuration_reference_shows_each_key_with_type_default_backends_and_meaning() -> None:
    from clustrix.config.settings import reference_page

    page = reference_page()
    assert '| `remote_work_dir` | `str \\| PathLike` | `"~/.clustrix"` | ssh, slurm, pbs, sge | where private' in page
    assert "| `executor` | `'auto' \\| 'process' \\| 'thread'` | `\"auto\"` | local |" in page


def test_a_path_is_taken_where_a_key_names_a_file_or_folder(tmp_path: Path) -> None:
    configure(remote_work_dir=tmp_path / "work", key_file=tmp_path / "id_ed25519")
    config = get_config()
    assert (config.remote_work_dir, config.key_file) == (str(tmp_path / "work"), str(tmp_path / "id_ed25519"))
    with pytest.raises(ConfigurationError, match=r"cluster_host=.* takes str \| None, not PosixPath"):
        configure(cluster_host=tmp_path)
