"""Function jobs: which functions a node may run, and how a job names one.

A node runs only functions from modules that its own operator named
(``--workload-module``, repeatable, or ``workload_modules`` in the config; the
master's ``--map`` names its module too). Holding the secret lets the master
name a function in those modules, never make a node import anything else: a
job names a function by module *name* and the fingerprint of its source, and a
node looks both up among the modules it already has.

A module's name is its dotted name when it was named as one (``examples.primes``)
and the file's stem when it was named by path (``examples/primes.py`` is
``primes``), so the two nodes agree however their files are laid out. The
fingerprint is the SHA-256 of the module's source file, so two nodes that run
different versions of a module find out when they join, not by wrong results.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

FILE_PREFIX = "lb_user_"  # a module imported by path lives in sys.modules under this prefix
MAX_NAME = 200  # module and function names from the network are at most this long


class FunctionError(ValueError):
    """A function or module this node cannot run; the message says what to do."""


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """What a job names: a top-level function of a module, at one version of its source."""

    module: str
    function: str
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.module}:{self.function}"


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    spec: str  # what the operator named (a path or a dotted name): what a worker process imports
    fingerprint: str
    module: ModuleType


def split_target(text: str) -> tuple[str, str]:
    """``MODULE:FUNCTION`` (MODULE a dotted name or a .py path) as its two parts."""
    spec, _, function = text.rpartition(":")
    if not spec or not function.isidentifier():
        raise FunctionError(f"{text!r} is not MODULE:FUNCTION (e.g. examples/primes.py:count)")
    return spec, function


def module_name(spec: str) -> str:
    return Path(spec).stem if spec.endswith(".py") else spec


def import_spec(spec: str) -> ModuleType:
    """Import what an operator named: a .py file (its folder joins sys.path, as when it is
    run as a script, so it can import its neighbours) or a dotted module name."""
    if not spec.endswith(".py"):
        return importlib.import_module(spec)
    path = Path(spec).resolve()
    if not path.is_file():
        raise FunctionError(f"module {spec}: no such file")
    name = FILE_PREFIX + path.stem
    known = sys.modules.get(name)
    if known is not None and getattr(known, "__file__", None) == str(path):
        return known
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def public_name(module: str) -> str:
    """The name people know a module by (the stem of a file module, not its import name)."""
    return module.removeprefix(FILE_PREFIX)


def fingerprint(module: ModuleType) -> str:
    source = getattr(module, "__file__", None)
    if not source:
        raise FunctionError(f"module {module.__name__} has no source file to run functions from")
    try:
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError as error:
        raise FunctionError(f"module {module.__name__}: {error.strerror}") from None


def plain_function(module: ModuleType, name: str) -> Callable[..., Any]:
    """The top-level function ``name`` of ``module``: not a class, a method, a lambda
    assigned to a name, or anything imported from elsewhere."""
    function = getattr(module, name, None) if name.isidentifier() else None
    if function is None and name.isidentifier():
        raise FunctionError(f"module {public_name(module.__name__)} has no function {name!r}")
    if not (inspect.isfunction(function) and function.__module__ == module.__name__
            and function.__qualname__ == name):
        raise FunctionError(f"{public_name(module.__name__)}:{name} is not a plain top-level "
                            "function of that module")
    return function


class Catalog:
    """The modules this node's operator named, by name."""

    def __init__(self) -> None:
        self.modules: dict[str, Module] = {}

    def add(self, spec: str) -> Module:
        """Import a module the operator named (once); FunctionError in one line if it fails."""
        name = module_name(spec)
        known = self.modules.get(name)
        if known is not None:
            if Path(known.spec).resolve() != Path(spec).resolve() and known.spec != spec:
                raise FunctionError(f"two modules are named {name!r}: {known.spec} and {spec}")
            return known
        try:
            module = import_spec(spec)
        except FunctionError:
            raise
        except Exception as error:  # the user's code may fail any way: say so in one line
            raise FunctionError(f"module {spec}: {type(error).__name__}: {error}") from None
        return self._keep(Module(name, spec, fingerprint(module), module))

    def _keep(self, module: Module) -> Module:
        self.modules[module.name] = module
        return module

    def ref(self, target: str) -> FunctionRef:
        """The reference to ``MODULE:FUNCTION``, whose module this names (and so allows)."""
        spec, function = split_target(target)
        module = self.add(spec)
        plain_function(module.module, function)
        return FunctionRef(module.name, function, module.fingerprint)

    def ref_of(self, function: Callable[..., Any]) -> FunctionRef:
        """The reference to a function the caller holds (the Executor's ``submit``): its
        module joins the catalog, since the caller chose to run it."""
        module = sys.modules.get(getattr(function, "__module__", "") or "")
        name = getattr(function, "__qualname__", "")
        if module is None:
            raise FunctionError(f"{function!r} does not come from an imported module")
        plain_function(module, name)
        if module.__name__ == "__main__":
            spec = str(getattr(module, "__file__", "") or "")
            if not spec.endswith(".py"):
                raise FunctionError("functions of an interactive session cannot run in worker "
                                    "processes: define them in a .py file")
        elif module.__name__.startswith(FILE_PREFIX):
            spec = str(module.__file__)
        else:
            spec = module.__name__
        known = self.modules.get(module_name(spec))
        if known is None:
            known = self._keep(Module(module_name(spec), spec, fingerprint(module), module))
        return FunctionRef(known.name, name, known.fingerprint)

    def resolve(self, ref: FunctionRef) -> Module:
        """The module that runs the master's ``ref`` on this slave; FunctionError naming
        the fix if there is none."""
        module = self.modules.get(ref.module)
        if module is None:
            raise FunctionError(f"module {ref.module!r} was not given to the slave (restart it "
                                f"with --workload-module {ref.module}.py, or the module's "
                                "dotted name)")
        if module.fingerprint != ref.fingerprint:
            raise FunctionError(f"the slave's module {ref.module!r} ({module.spec}, sha256 "
                                f"{module.fingerprint[:12]}) is another version than the "
                                f"master's (sha256 {ref.fingerprint[:12]}): install the same "
                                "file on both nodes")
        plain_function(module.module, ref.function)
        return module
