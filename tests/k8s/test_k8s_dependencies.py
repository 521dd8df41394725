"""Futures as arguments on Kubernetes (issue 21), against the real node: the dependant's Jobs are created at
once and their pods wait for their inputs, so the pipeline needs no client.

The behaviour is the batch schedulers' (tests/conformance/test_dependencies.py, whose tests run here
on a Kubernetes target), plus what only Kubernetes does: the waiting pod's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

from clustrix import Job, cluster
from tests.conformance import test_dependencies as shared
from tests.conformance.target import Target
from tests.k8s.test_k8s_jobs import _jobs_of
from tests.testbed.k8s import KubeCluster

pytestmark = [pytest.mark.testbed_k8s, pytest.mark.timeout(900)]


@pytest.fixture
def target(k8s_config: dict[str, Any]) -> Iterator[Target]:
    cloudpickle.register_pickle_by_value(shared)  # the shared tests' functions travel whole, as this module's
    yield Target(scheduler="kubernetes", transport="api", options=dict(k8s_config), inputs_one_by_one=True)
    cloudpickle.unregister_pickle_by_value(shared)


test_a_three_stage_pipeline_is_submitted_at_once_and_returns_the_final_value = (
    shared.test_a_three_stage_pipeline_is_submitted_at_once_and_returns_the_final_value
)
test_an_element_wise_map_over_a_map_gets_each_result_in_order = (
    shared.test_an_element_wise_map_over_a_map_gets_each_result_in_order
)
test_a_failed_input_raises_dependencyerror_naming_it_with_its_exception_as_cause = (
    shared.test_a_failed_input_raises_dependencyerror_naming_it_with_its_exception_as_cause
)
test_cancelling_an_upstream_cancels_its_dependants = shared.test_cancelling_an_upstream_cancels_its_dependants
test_the_cli_cancels_a_job_with_its_dependants = shared.test_the_cli_cancels_a_job_with_its_dependants
test_the_pipeline_finishes_after_the_submitting_process_was_killed = (
    shared.test_the_pipeline_finishes_after_the_submitting_process_was_killed
)


def test_a_dependant_pod_waits_for_its_input_without_its_time_limit_running_out(target: Target) -> None:
    @cluster(**target.options, time="00:01:00")
    def slow(x: int) -> int:
        time.sleep(12)
        return x + 1

    @cluster(**target.options, time="00:00:08")
    def quick(x: int) -> int:
        return 10 * x

    upstream = slow.submit(4)
    dependant = quick.submit(upstream)
    handle = dependant.handle
    assert handle is not None, "the dependant was chained in the client"
    assert handle.data["deadline"] == 8 + 60, "its deadline does not cover the wait for its input"
    assert dependant.result(timeout=300) == 50
    assert Job.attach(dependant.job_id).status().state.final


def test_the_client_deletes_an_input_only_after_its_dependants_have_read_it(target: Target, kube: KubeCluster) -> None:
    @cluster(**target.options, cleanup_on_success=True)
    def slow_first(x: int) -> int:
        time.sleep(8)  # the dependant's pod looks for it less often by then (every few seconds)
        return x + 1

    @cluster(**target.options, cleanup_on_success=True)
    def second(x: int) -> int:
        return 2 * x

    upstream = slow_first.submit(1)
    dependant = second.submit(upstream)
    assert upstream.result(timeout=300) == 2  # home, and cleaned up at once were it not for its dependant
    assert dependant.result(timeout=300) == 4
    deadline = time.monotonic() + 60
    while _jobs_of(kube, upstream.job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _jobs_of(kube, upstream.job_id), "the input's Jobs stayed after its dependant had read it"
