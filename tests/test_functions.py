"""Which functions a node may run: the catalog of operator-named modules, and tasks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadbalancer.functions import Catalog, FunctionError, FunctionRef, split_target
from loadbalancer.messages import WorkloadSpec
from loadbalancer.tasks import FunctionTask, Tasks, WorkloadTask, function_spec
from loadbalancer.workload import WorkloadError

SOURCE = '''
import math

def count(n):
    return n

class Counter:
    def method(self):
        pass

square = lambda x: x * x
sqrt = math.sqrt

def outer():
    def inner():
        pass
    return inner

nested = outer()
'''


@pytest.fixture
def module(tmp_path: Path) -> Path:
    path = tmp_path / f"fns_{tmp_path.name[-12:].replace('-', '_')}.py"
    path.write_text(SOURCE)
    return path


def test_a_module_named_by_path_is_known_by_its_stem(module: Path) -> None:
    catalog = Catalog()
    ref = catalog.ref(f"{module}:count")
    assert ref.module == module.stem and ref.function == "count"
    assert len(ref.fingerprint) == 64
    assert catalog.resolve(ref).spec == str(module)
    assert catalog.add(str(module)) is catalog.modules[module.stem]  # imported once


@pytest.mark.parametrize(("name", "words"), [
    ("absent", "has no function 'absent'"),
    ("Counter", "not a plain top-level function"),
    ("square", "not a plain top-level function"),
    ("sqrt", "not a plain top-level function"),
    ("nested", "not a plain top-level function"),
])
def test_only_plain_top_level_functions_are_jobs(module: Path, name: str, words: str) -> None:
    with pytest.raises(FunctionError, match=words):
        Catalog().ref(f"{module}:{name}")


def test_a_node_runs_only_what_its_operator_named(module: Path) -> None:
    master = Catalog()
    ref = master.ref(f"{module}:count")
    with pytest.raises(FunctionError, match=f"module '{module.stem}' was not given to the slave"):
        Catalog().resolve(ref)
    # The master may name a module the slave has, but not make it import another one.
    imported = set(sys.modules)
    with pytest.raises(FunctionError, match="was not given to the slave"):
        Catalog().resolve(FunctionRef("os", "system", ref.fingerprint))
    assert set(sys.modules) == imported


def test_another_version_of_the_module_is_named_with_both_fingerprints(module: Path,
                                                                      tmp_path: Path) -> None:
    ref = Catalog().ref(f"{module}:count")
    changed = tmp_path / "other" / module.name
    changed.parent.mkdir()
    changed.write_text(SOURCE + "\n# changed\n")
    slave = Catalog()
    slave.modules.clear()
    mine = slave.add(str(changed))
    with pytest.raises(FunctionError, match=f"another version.*{ref.fingerprint[:12]}"):
        slave.resolve(FunctionRef(mine.name, "count", ref.fingerprint))


def test_broken_and_missing_modules_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken_module.py"
    broken.write_text("raise RuntimeError('oops')\n")
    with pytest.raises(FunctionError, match="RuntimeError: oops"):
        Catalog().add(str(broken))
    assert "lb_user_broken_module" not in sys.modules
    with pytest.raises(FunctionError, match="no such file"):
        Catalog().add(str(tmp_path / "absent.py"))
    with pytest.raises(FunctionError, match="ModuleNotFoundError"):
        Catalog().add("no_such_module_anywhere")


@pytest.mark.parametrize("text", ["count", "m.py:", ":count", "m.py:not-a-name"])
def test_a_target_is_module_colon_function(text: str) -> None:
    with pytest.raises(FunctionError, match="MODULE:FUNCTION"):
        split_target(text)


def test_a_function_the_caller_holds_names_its_module() -> None:
    catalog = Catalog()
    ref = catalog.ref_of(split_target)
    assert ref == FunctionRef("loadbalancer.functions", "split_target", ref.fingerprint)
    with pytest.raises(FunctionError, match="not a plain top-level function"):
        catalog.ref_of(lambda x: x)


def test_tasks_come_from_what_the_node_has(module: Path) -> None:
    catalog = Catalog()
    tasks = Tasks(catalog)
    ref = catalog.ref(f"{module}:count")
    task = tasks.get(function_spec(ref))
    assert isinstance(task, FunctionTask) and task.module_spec == str(module)
    assert tasks.get(function_spec(ref)) is task
    vector = tasks.get(WorkloadSpec("vector", {"elements": 4, "jobs": 2}))
    assert isinstance(vector, WorkloadTask) and vector.workload.job_count == 2
    with pytest.raises(WorkloadError, match="unknown workload"):
        tasks.get(WorkloadSpec("matrix", {}))
    with pytest.raises(FunctionError, match="not a function reference"):
        tasks.get(WorkloadSpec("function", {"module": "x" * 500, "function": "f",
                                            "fingerprint": "0"}))


def test_a_peer_cannot_grow_the_tasks_without_bound() -> None:
    tasks = Tasks(Catalog())
    for jobs in range(1, 300):
        tasks.get(WorkloadSpec("vector", {"elements": 300, "jobs": jobs}))
    assert len(tasks._kept) <= 32
