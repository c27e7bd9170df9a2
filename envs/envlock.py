"""Lock and check the rule environments (envs/*.yaml) for the cluster target.

Each env has three files:

* ``envs/requirements/<env>.in`` – what the env's code needs (hand-written): exact pins only for
  the engine and the libraries whose API the code follows, lower bounds otherwise, so that the
  resolver picks versions an engine requires (vllm 0.33.0 needs numpy < 2.4 through
  mistral-common);
* ``envs/locks/<env>.txt`` – ``uv pip compile`` of that file plus this package's own
  dependencies (pyproject.toml) for :data:`TARGET`: every distribution, transitive ones included,
  at an exact version; its header records :func:`input_digest`;
* ``envs/<env>.yaml`` – the conda env Snakemake builds (``--sdm conda``): python, pip, the lock's
  pins inline, then this package (``-e ${TEACHFIT_WORKFLOW}``, set by rules/common.smk).
  The pins are inline, not ``-r locks/<env>.txt``: Snakemake 9 copies the yaml alone into
  .snakemake/conda/ before conda runs pip there, and hashes the yaml's text to name the env,
  so a changed lock builds a new env.

``python envs/envlock.py lock [ENV ...]`` writes the lock and the yaml (``make lock-envs``);
``python envs/envlock.py check [ENV ...]`` (``make check-envs``) fails on a stale lock, a yaml
that is not its lock, a requirement the lock does not satisfy, and any resolution conflict: the
requirements resolved from scratch, and the requirements with the lock as constraints (which must
reproduce the lock). Both need PyPI and ``uv`` (the test extra).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ENVS = Path(__file__).resolve().parent
ROOT = ENVS.parent
REQUIREMENTS = ENVS / "requirements"
LOCKS = ENVS / "locks"
# The cluster: Linux x86_64 (glibc >= 2.28), CPython 3.11, PyPI's CUDA builds of torch and vllm.
TARGET = ("--python-platform", "x86_64-manylinux_2_28", "--python-version", "3.11")
PYTHON = "python =3.11"
PIP = "pip =25.3"
PROJECT = "-e ${TEACHFIT_WORKFLOW}"
DIGEST_LINE = "# input-digest: "
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*$")


def env_names() -> list[str]:
    """Every env that has a requirements file (``envs/requirements/*.in``)."""
    return sorted(p.stem for p in REQUIREMENTS.glob("*.in"))


def project_dependencies() -> list[str]:
    """This package's own ``[project].dependencies`` (pyproject.toml): installed in every env."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def direct_requirements(env: str) -> list[Requirement]:
    """The env's requirements file plus :func:`project_dependencies`, parsed.

    Raises ValueError naming the file and line of a requirement that does not parse."""
    path = REQUIREMENTS / f"{env}.in"
    reqs = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                reqs.append(Requirement(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{i}: {exc}") from exc
    return reqs + [Requirement(r) for r in project_dependencies()]


def input_digest(env: str) -> str:
    """sha256 of what the lock is compiled from: the requirements file, this package's
    dependencies and the target; recorded in the lock, compared by :func:`check_static`."""
    h = hashlib.sha256()
    h.update((REQUIREMENTS / f"{env}.in").read_bytes())
    h.update("\n".join(project_dependencies()).encode())
    h.update(" ".join(TARGET).encode())
    return h.hexdigest()


def read_pins(lines: list[str], where: str) -> dict[str, str]:
    """``name==version`` pins of requirement lines (comments and blank lines skipped), by
    normalized name. Raises ValueError naming ``where`` and the line for anything else."""
    pins: dict[str, str] = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        m = _PIN.match(text)
        if not m:
            raise ValueError(f"{where}: not an exact pin: {text!r}")
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def lock_pins(env: str) -> dict[str, str]:
    """The pins of ``envs/locks/<env>.txt``."""
    path = LOCKS / f"{env}.txt"
    return read_pins(path.read_text().splitlines(), str(path))


def yaml_pip(env: str) -> list[str]:
    """The pip section of ``envs/<env>.yaml``."""
    spec = yaml.safe_load((ENVS / f"{env}.yaml").read_text())
    for dep in spec.get("dependencies", []):
        if isinstance(dep, dict) and "pip" in dep:
            return [str(e) for e in dep["pip"]]
    return []


def _uv() -> str:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(uv).exists():
        raise SystemExit("uv not found: install the test extra (pip install -e '.[test]')")
    return uv


def compile_env(env: str, out: Path, constraints: Path | None = None) -> subprocess.CompletedProcess:
    """``uv pip compile pyproject.toml envs/requirements/<env>.in`` for :data:`TARGET` into
    ``out`` (run in the repository root, so the header holds relative paths)."""
    req = os.path.relpath(REQUIREMENTS / f"{env}.in", ROOT)
    cmd = [_uv(), "pip", "compile", "--quiet", "pyproject.toml", req, *TARGET,
           "--custom-compile-command", f"make lock-envs ENVS={env}", "-o", str(out)]
    if constraints is not None:
        cmd += ["--constraint", str(constraints)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def _header(env: str) -> list[str]:
    """The requirements file's leading comment block, for the yaml."""
    out = []
    for line in (REQUIREMENTS / f"{env}.in").read_text().splitlines():
        if not line.startswith("#"):
            break
        out.append(line)
    return out


def render_yaml(env: str, pins: dict[str, str]) -> str:
    """The conda env file for a lock's pins (see the module docstring)."""
    lines = [*_header(env),
             f"# Generated by `make lock-envs` from envs/requirements/{env}.in: the pins are",
             f"# envs/locks/{env}.txt (Linux x86_64, Python 3.11; docs/environments.md). Do not edit.",
             "channels:", "  - conda-forge", "  - nodefaults", "dependencies:",
             f"  - {PYTHON}", f"  - {PIP}", "  - pip:"]
    lines += [f"      - {name}=={version}" for name, version in sorted(pins.items())]
    lines.append(f"      - {PROJECT}")
    return "\n".join(lines) + "\n"


def lock(env: str) -> None:
    """Resolve ``env`` and write ``envs/locks/<env>.txt`` and ``envs/<env>.yaml``.

    Raises SystemExit with uv's explanation when the requirements do not resolve."""
    LOCKS.mkdir(exist_ok=True)
    path = LOCKS / f"{env}.txt"
    proc = compile_env(env, path)
    if proc.returncode:
        raise SystemExit(f"{env}: requirements do not resolve for {' '.join(TARGET)}:\n{proc.stderr}")
    path.write_text(f"{DIGEST_LINE}{input_digest(env)}\n" + path.read_text())
    (ENVS / f"{env}.yaml").write_text(render_yaml(env, lock_pins(env)))


def check_static(env: str) -> list[str]:
    """Problems found without a resolver: a lock that is stale (its input digest differs), a
    yaml whose pins are not the lock's or that lacks python/pip/the project install, and a
    requirement (requirements file or pyproject) that the locked version does not satisfy
    (a pin against what an engine requires cannot survive this and the resolution)."""
    problems = []
    lock_path = LOCKS / f"{env}.txt"
    if not lock_path.exists():
        return [f"{env}: no lock {lock_path.relative_to(ROOT)} (make lock-envs ENVS={env})"]
    first = lock_path.read_text().splitlines()[0]
    if first != DIGEST_LINE + input_digest(env):
        problems.append(f"{env}: {lock_path.relative_to(ROOT)} is stale: envs/requirements/{env}.in or "
                        f"pyproject.toml's dependencies changed since it was compiled (make lock-envs ENVS={env})")
    pins = lock_pins(env)
    pip = yaml_pip(env)
    if PROJECT not in pip:
        problems.append(f"{env}: envs/{env}.yaml does not install the teachfit package ({PROJECT})")
    try:
        ypins = read_pins([e for e in pip if e != PROJECT], f"envs/{env}.yaml")
    except ValueError as exc:
        problems.append(str(exc))
        ypins = {}
    if ypins != pins:
        diff = sorted(set(ypins.items()) ^ set(pins.items()))
        problems.append(f"{env}: envs/{env}.yaml's pins differ from its lock: {diff[:10]} (make lock-envs ENVS={env})")
    deps = yaml.safe_load((ENVS / f"{env}.yaml").read_text()).get("dependencies", [])
    for want in (PYTHON, PIP):
        if want not in deps:
            problems.append(f"{env}: envs/{env}.yaml lacks {want!r}")
    problems += [f"{env}: {p}" for p in unsatisfied(direct_requirements(env), pins)]
    return problems


def unsatisfied(requirements: list[Requirement], pins: dict[str, str]) -> list[str]:
    """Each requirement that ``pins`` (normalized name -> version) lacks or does not satisfy."""
    out = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name not in pins:
            out.append(f"requirement {req} is not in the lock")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            out.append(f"requirement {req} is not satisfied by the lock's {name}=={pins[name]}")
    return out


def check(env: str) -> list[str]:
    """:func:`check_static`, then two resolutions for :data:`TARGET`: from scratch (conflicts)
    and with the lock as constraints (the lock is a complete, consistent resolution)."""
    problems = check_static(env)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = compile_env(env, Path(tmp) / "scratch.txt")
        if scratch.returncode:
            problems.append(f"{env}: requirements do not resolve from scratch:\n{scratch.stderr}")
        lock_path = LOCKS / f"{env}.txt"
        if lock_path.exists():
            pinned = compile_env(env, Path(tmp) / "pinned.txt", constraints=lock_path)
            if pinned.returncode:
                problems.append(f"{env}: requirements do not resolve with the lock as constraints:\n{pinned.stderr}")
            else:
                got = read_pins((Path(tmp) / "pinned.txt").read_text().splitlines(), "resolution")
                if got != lock_pins(env):
                    diff = sorted(set(got.items()) ^ set(lock_pins(env).items()))
                    problems.append(f"{env}: the lock is not the resolution of its requirements: {diff[:10]}")
        if not scratch.returncode and lock_path.exists():
            newer = read_pins((Path(tmp) / "scratch.txt").read_text().splitlines(), "resolution")
            moved = sorted(n for n, v in newer.items() if lock_pins(env).get(n) not in (None, v))
            if moved:
                print(f"{env}: note: a fresh resolution picks other versions of {len(moved)} packages "
                      f"({', '.join(moved[:8])}); re-lock to take them")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["lock", "check"])
    ap.add_argument("envs", nargs="*", help="env names (default: every envs/requirements/*.in)")
    args = ap.parse_args(argv)
    envs = args.envs or env_names()
    unknown = sorted(set(envs) - set(env_names()))
    if unknown:
        ap.error(f"no envs/requirements/<env>.in for {unknown}")
    problems: list[str] = []
    for env in envs:
        if args.command == "lock":
            lock(env)
            print(f"{env}: {len(lock_pins(env))} pins -> envs/locks/{env}.txt, envs/{env}.yaml")
        else:
            found = check(env)
            problems += found
            print(f"{env}: {'FAILED' if found else 'ok'} ({len(lock_pins(env)) if (LOCKS / f'{env}.txt').exists() else 0} pins)")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
