"""The workload registry and the vector workload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadbalancer import workload
from loadbalancer.functions import Catalog
from loadbalancer.workload import Vector, WorkloadError


def small() -> workload.Workload:
    return workload.create("vector", {"elements": 10, "jobs": 3, "iterations": 4})


def test_jobs_cover_the_vector_like_array_split() -> None:
    vector = small()
    sizes = [len(vector.job_data(j)) // 8 for j in range(vector.job_count)]
    assert sizes == [len(part) for part in np.array_split(np.zeros(10), 3)]


def test_run_then_verify() -> None:
    vector = small()
    calls = []
    results = {j: vector.run(j, vector.job_data(j), lambda: calls.append(1))
               for j in range(vector.job_count)}
    assert len(calls) == 3 * 4  # a checkpoint every iteration
    vector.verify(results)
    assert np.allclose(np.frombuffer(results[0]), Vector.VALUE * 5)


def test_verify_names_the_wrong_element_and_missing_jobs() -> None:
    vector = small()
    results = {j: vector.run(j, vector.job_data(j), lambda: None) for j in range(3)}
    wrong = np.frombuffer(results[1]).copy()
    wrong[2] = 0.0
    with pytest.raises(WorkloadError, match="element 6"):
        vector.verify({**results, 1: wrong.tobytes()})
    with pytest.raises(WorkloadError, match="1 results missing"):
        vector.verify({0: results[0], 1: results[1]})


def test_bad_data_sizes_and_ids_are_refused() -> None:
    vector = small()
    with pytest.raises(WorkloadError, match="expected 32"):
        vector.check_job(0, b"\x00" * 8)
    with pytest.raises(WorkloadError, match="out of range"):
        vector.check_result(7, b"")


@pytest.mark.parametrize(("params", "named"), [
    ({"elements": 0}, "elements"), ({"jobs": "many"}, "jobs"), ({"iterations": -1}, "iterations"),
    ({"speed": 3}, "speed"), ({"elements": 2, "jobs": 3}, "jobs"),
])
def test_bad_parameters_are_named(params: dict[str, object], named: str) -> None:
    with pytest.raises(WorkloadError, match=named):
        workload.create("vector", params)


def test_unknown_workload() -> None:
    with pytest.raises(WorkloadError, match="unknown workload 'matrix'"):
        workload.create("matrix", {})


def test_user_module_registers_a_workload(tmp_path: Path) -> None:
    module = tmp_path / "squares.py"
    module.write_text('''
from loadbalancer.workload import Vector, register

@register
class Doubled(Vector):
    name = "doubled"
''')
    Catalog().add(str(module))
    assert workload.create("doubled", {"elements": 4, "jobs": 2}).job_count == 2


def test_parameters_from_a_peer_are_bounded_and_allocate_nothing() -> None:
    with pytest.raises(WorkloadError, match="elements must be a whole number from 1 to"):
        workload.create("vector", {"elements": 10**400, "jobs": 10**9})
    huge = workload.create("vector", {"elements": 2**34, "jobs": 10**7})  # no per-job list
    assert huge.job_count == 10**7
    with pytest.raises(WorkloadError, match="data of job 3 has 8 bytes, expected 13744"):
        huge.check_job(3, bytes(8))


async def test_a_wrong_result_is_computed_again_once_then_it_is_a_failure() -> None:
    from loadbalancer.batch import WorkloadBatch
    from loadbalancer.functions import Catalog
    from loadbalancer.messages import WorkloadSpec
    from loadbalancer.tasks import Tasks

    batch = WorkloadBatch.of(Tasks(Catalog()), WorkloadSpec(
        "vector", {"elements": 10, "jobs": 3, "iterations": 4}))
    vector = small()
    right = {job: vector.run(job, vector.job_data(job), lambda: None) for job in range(3)}
    for job, data in right.items():
        batch.result(job, data if job != 1 else bytes(len(data)), None)
    assert await batch.finish() == [1]  # wrong: compute it again
    assert 1 not in batch.results
    batch.result(1, right[1], None)
    assert await batch.finish() is None
    batch.result(1, bytes(len(right[1])), None)  # wrong again after computing it again
    error = await batch.finish()
    assert isinstance(error, str) and "element" in error


def test_uneven_costs_are_deterministic_bounded_and_verified() -> None:
    params = {"elements": 4096, "jobs": 512, "iterations": 100, "spread": 1.0, "seed": 7}
    one, two = Vector.from_params(params), Vector.from_params(dict(params))
    costs = [one.job_iterations(job) for job in range(512)]
    assert costs == [two.job_iterations(job) for job in range(512)]
    assert len(set(costs)) > 100 and min(costs) >= 1 and max(costs) <= 100 * 64
    other = Vector(4096, 512, 100, spread=1.0, seed=8)
    assert costs != [other.job_iterations(job) for job in range(512)]
    # Mean 1 (lognormal of sigma 1 has a heavy tail: within 15 % on 512 draws).
    assert abs(sum(costs) / (100 * 512) - 1) < 0.15
    assert one.params() == params  # what crosses the network recreates it
    results = {job: one.run(job, one.job_data(job), lambda: None) for job in range(512)}
    one.verify(results)
    results[5] = results[6] if costs[5] != costs[6] else results[5]
    assert one.wrong(results) == ([5] if costs[5] != costs[6] else [])


def test_a_straggler_does_factor_times_its_share_and_even_costs_keep_their_params() -> None:
    vector = Vector.from_params({"elements": 40, "jobs": 4, "iterations": 10,
                                  "straggler": 3, "factor": 20})
    assert [vector.job_iterations(j) for j in range(4)] == [10, 10, 10, 200]
    vector.verify({j: vector.run(j, vector.job_data(j), lambda: None) for j in range(4)})
    assert small().params() == {"elements": 10, "jobs": 3, "iterations": 4}


@pytest.mark.parametrize(("params", "named"), [
    ({"spread": 3.5}, "spread"), ({"spread": True}, "spread"), ({"seed": -1}, "seed"),
    ({"seed": 2**40}, "seed"), ({"straggler": 3}, "straggler"), ({"straggler": 1.0}, "straggler"),
    ({"straggler": 0, "factor": 10**6}, "factor"), ({"factor": 0}, "factor"),
])
def test_cost_parameters_are_bounded(params: dict[str, object], named: str) -> None:
    with pytest.raises(WorkloadError, match=named):
        workload.create("vector", {"elements": 10, "jobs": 3, **params})
