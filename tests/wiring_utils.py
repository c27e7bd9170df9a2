"""Wiring checks over the parsed DAG: what each job's function imports, and what its env holds.

* :func:`dag_jobs` builds a config's DAG with Snakemake's API in a subprocess (forceall, no
  execution; every checkpoint taken as passed, see ``_PROBE``) and returns one record per job:
  rule, inputs, evaluated resources, conda env file and script.
* :func:`script_functions` reads a rule's script and returns the package functions it calls
  (the ``teachfit`` names it imports).
* :func:`import_closure` follows, statically, what running a function imports: the module-level
  imports of its module (and of every package and module they import; a function a module imports
  at its top is followed only where code that runs at import time uses it), the imports inside the
  function, and, transitively, every package function or class it refers to. It is per function,
  not per module, so an analysis-only function does not inherit the torch import of a sibling
  function that loads a model.
* :func:`distributions` maps the third-party top-level modules found to installed distribution
  names with ``importlib.metadata.packages_distributions()`` (derived from the installed
  packages' metadata, not from a hand-kept table).
* :func:`env_distributions` reads a conda env file's pip and conda package names.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import json
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "teachfit"

_PROBE = r"""
import json, sys, tempfile, types
from pathlib import Path
import snakemake.checkpoints
from snakemake.api import SnakemakeApi

# The DAG as it is once every checkpoint has run and passed everything on (the largest DAG):
# pool_evolved's summaries say every pool is full, merge_evolved's rankings rank every evolver.
# Without this, jobs downstream of a checkpoint (the teacher's answers to evolved sets, their
# SFT runs) would be missing from the DAG a dry build can see.
_FAKE = Path(tempfile.mkdtemp(prefix="wiring-checkpoints-"))


def _complete(self, **wildcards):
    from teachfit.workflow.plan import build_plan

    output, _ = self.rule.expand_output(wildcards)
    plan = build_plan(self.rule.workflow.config)
    ranked = plan.scenario_evolvers(wildcards["scenario"]) if "scenario" in wildcards else []
    paths = {}
    for name in output.keys():
        path = _FAKE / str(getattr(output, name)).replace("/", "__")
        path.write_text(json.dumps({"rows": 10**9, "ranked": ranked}))
        paths[name] = str(path)
    return types.SimpleNamespace(rule=self.rule, output=types.SimpleNamespace(**paths))


snakemake.checkpoints.Checkpoint.get = _complete
from snakemake.settings.types import (ConfigSettings, DAGSettings, DeploymentSettings, OutputSettings,
                                      ResourceSettings, StorageSettings, WorkflowSettings)
configs = [Path(c) for c in sys.argv[1:]]
with SnakemakeApi(OutputSettings()) as api:
    wapi = api.workflow(snakefile=Path("Snakefile"), workdir=Path("."),
                        config_settings=ConfigSettings(configfiles=configs),
                        resource_settings=ResourceSettings(cores=1), storage_settings=StorageSettings(),
                        workflow_settings=WorkflowSettings(), deployment_settings=DeploymentSettings())
    wapi.dag(DAGSettings(forceall=True))
    wf = wapi._workflow
    wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
    wf._build_dag()
    out = []
    for job in wf.dag.jobs:
        r = job.rule
        out.append({"rule": r.name, "input": [str(f) for f in job.input],
                    "resources": {k: v for k, v in job.resources.items() if isinstance(v, (int, float, str))},
                    "conda": str(Path(r.basedir) / r.conda_env) if r.conda_env else None,
                    "script": str(Path(r.basedir) / r.script) if r.script else None,
                    "keys": [k for part in (job.input, job.output, job.params) for k in part.keys()]})
    print("DAGJSON" + json.dumps(out))
"""


def dag_jobs(workdir: Path, *configfiles: str) -> list[dict]:
    """Every job of the DAG of ``configfiles`` (forceall), built in a subprocess in ``workdir``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *configfiles], cwd=workdir, capture_output=True,
                          text=True, timeout=600, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("DAGJSON"):
            return json.loads(line[len("DAGJSON"):])
    raise AssertionError(f"DAG probe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def apply_profile(jobs: list[dict], profile_yaml: Path) -> list[dict]:
    """Overlay a workflow profile's ``set-resources`` (per rule) on the jobs' resources."""
    prof = yaml.safe_load(profile_yaml.read_text()) or {}
    per_rule = prof.get("set-resources", {}) or {}
    return [{**j, "resources": {**j["resources"], **per_rule.get(j["rule"], {})}} for j in jobs]


# --------------------------------------------------------------------------- static imports


@lru_cache(maxsize=None)
def _module_ast(module: str) -> tuple[ast.Module, bool] | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text())
    # imports inside ``try: ... except ImportError`` are optional: a job runs without them
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                "ImportError" in ast.unparse(h.type or ast.Name("BaseException")) for h in node.handlers):
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        sub.optional = True  # type: ignore[attr-defined]
    return tree, spec.submodule_search_locations is not None


def _resolve(module: str, level: int, name: str | None, current: str, is_pkg: bool) -> str:
    if not level:
        return name or ""
    base = current.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


class _Closure:
    def __init__(self) -> None:
        self.third_party: set[str] = set()
        self.seen: set[tuple[str, str | None]] = set()

    # an import statement executed somewhere in ``module``
    def _import(self, node: ast.AST, module: str, is_pkg: bool) -> list[tuple[str, str | None]]:
        if getattr(node, "optional", False):
            return []
        targets: list[tuple[str, str | None]] = []
        if isinstance(node, ast.Import):
            for a in node.names:
                targets.append((a.name, None))
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node.module or "", node.level, node.module, module, is_pkg)
            for a in node.names:
                targets.append((mod, a.name))
        out = []
        for mod, name in targets:
            top = mod.split(".")[0]
            if top == PACKAGE:
                out.append((mod, name))
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                self.third_party.add(top)
        return out

    def module(self, module: str) -> None:
        """Importing ``module`` runs its parents' and its own top-level imports."""
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            self._module_body(".".join(parts[:i]))

    def _module_body(self, module: str) -> None:
        if (module, None) in self.seen:
            return
        self.seen.add((module, None))
        parsed = _module_ast(module)
        if parsed is None:
            return
        tree, is_pkg = parsed
        # a module-level import runs the imported module's body, not the bodies of the functions
        # it names: those are followed where code that runs at import time refers to them
        aliases: dict[str, tuple[str, str | None]] = {}
        for node in tree.body:
            if _is_type_checking(node):
                continue
            for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef,
                                                                  ast.AsyncFunctionDef)) else []:
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    for mod, name in self._import(sub, module, is_pkg):
                        if name is not None and _safe_is_module(f"{mod}.{name}"):
                            self.module(f"{mod}.{name}")
                        else:
                            self.module(mod)
                    if isinstance(sub, ast.ImportFrom):
                        mod = _resolve(sub.module or "", sub.level, sub.module, module, is_pkg)
                        for a in sub.names:
                            aliases[a.asname or a.name] = (mod, a.name)
        defs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        for expr in _runs_at_import(tree.body):
            for sub in ast.walk(expr):
                if isinstance(sub, ast.Name) and sub.id in aliases and aliases[sub.id][0].split(".")[0] == PACKAGE:
                    self.symbol(*aliases[sub.id])
                elif isinstance(sub, ast.Name) and sub.id in defs:
                    self.symbol(module, sub.id)

    def symbol(self, module: str, name: str | None) -> None:
        """Using ``module.name``: import the module, then follow the name if it is a function or
        class of the package (its body's imports and the package names it refers to)."""
        if name is not None and _safe_is_module(f"{module}.{name}"):
            self.module(f"{module}.{name}")
            return
        self.module(module)
        if name is None or (module, name) in self.seen:
            return
        self.seen.add((module, name))
        parsed = _module_ast(module)
        if parsed is None:
            return
        tree, is_pkg = parsed
        defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        node = defs.get(name)
        if node is None:
            return
        aliases: dict[str, str] = {}  # local name -> qualified package symbol or module
        for scope in (tree.body, [node]):
            for top in scope:
                for sub in ast.walk(top) if scope is not tree.body else [top]:
                    if isinstance(sub, ast.ImportFrom):
                        mod = _resolve(sub.module or "", sub.level, sub.module, module, is_pkg)
                        for a in sub.names:
                            aliases[a.asname or a.name] = f"{mod}.{a.name}"
                    elif isinstance(sub, ast.Import):
                        for a in sub.names:
                            aliases[a.asname or a.name.split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                for mod, nm in self._import(sub, module, is_pkg):
                    self.symbol(mod, nm)
            elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                target = aliases.get(sub.value.id)
                if target and target.split(".")[0] == PACKAGE and _safe_is_module(target):
                    self.symbol(target, sub.attr)
            elif isinstance(sub, ast.Name) and sub.id != name:
                if sub.id in defs:
                    self.symbol(module, sub.id)
                elif sub.id in aliases and aliases[sub.id].split(".")[0] == PACKAGE:
                    mod, _, nm = aliases[sub.id].rpartition(".")
                    self.symbol(mod, nm)


def _runs_at_import(body: list[ast.stmt]) -> list[ast.AST]:
    """The parts of a module (or class) body that run when it is imported: statements other than
    imports and definitions, and the decorators, defaults and bases of definitions."""
    out: list[ast.AST] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or _is_type_checking(node):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += [*node.decorator_list, *node.args.defaults, *[d for d in node.args.kw_defaults if d]]
        elif isinstance(node, ast.ClassDef):
            out += [*node.decorator_list, *node.bases, *[k.value for k in node.keywords]]
            out += _runs_at_import(node.body)
        else:
            out.append(node)
    return out


def _safe_is_module(qualname: str) -> bool:
    try:
        return importlib.util.find_spec(qualname) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def import_closure(module: str, name: str) -> set[str]:
    """Third-party top-level module names that calling ``module.name`` imports (static)."""
    c = _Closure()
    c.symbol(module, name)
    return c.third_party


def script_functions(script: Path) -> list[tuple[str, str]]:
    """(module, name) of every package symbol a rule script imports."""
    tree = ast.parse(script.read_text())
    out = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
            out += [(node.module, a.name) for a in node.names]
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(modules: set[str]) -> set[str]:
    """Installed distributions (normalized names) providing these top-level modules (a module
    that is not installed maps to its own name)."""
    table = md.packages_distributions()
    out = set()
    for m in modules:
        dists = table.get(m)
        # a module not installed here (vllm on a CPU test machine) is assumed to be its own
        # distribution, which is true of every such import in this package
        out.add(_norm(dists[0]) if dists else _norm(m))
    return out


def env_distributions(env_file: Path) -> set[str]:
    """Package names (normalized) an env file installs: conda deps and pip requirements;
    an editable install (``-e ${TEACHFIT_WORKFLOW}``) counts as this package."""
    spec = yaml.safe_load(env_file.read_text())
    names: set[str] = set()
    for dep in spec.get("dependencies", []):
        entries = dep.get("pip", []) if isinstance(dep, dict) else [dep]
        for e in entries:
            e = str(e).strip()
            if e.startswith("-e ") or e in ("..", "../", "-e ..") or e.startswith(".."):
                names.add(PACKAGE)
                continue
            names.add(_norm(re.split(r"[ =<>!~\[;@]", e, maxsplit=1)[0]))
    return names
