"""``teachfit``: one command for the workflow's three jobs a practitioner asks for.

* ``teachfit rank-teachers`` -- which teacher to distil from, for each student, without
  fine-tuning (Snakemake target ``rank_teachers``);
* ``teachfit select-data`` -- which examples of a data set to keep, for a student, without
  fine-tuning (targets of rule ``select_data``);
* ``teachfit run`` -- the full workflow (every configured study), or the given targets.

It is a thin front end over Snakemake: it checks the inputs it is given (files, field names, model
aliases) with the same functions the jobs use, writes the command's settings as a config overlay
(``results/cli/<command>.yaml``, on top of ``config/config.yaml`` and any ``--configfile``), and runs
``python -m snakemake`` on the targets. Partial re-runs, ``-n`` (dry run), ``--cores``, ``--profile``
(e.g. a SLURM profile) and ``--workflow-profile`` therefore behave exactly as with Snakemake;
anything after ``--`` is passed to Snakemake unchanged.

Errors that can be found before Snakemake starts -- a missing file, a wrong field name, an empty
data set, a model or generator alias not in the config, an invalid config -- end the command with
exit status 2 and one line naming the problem.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from teachfit.schema import ConfigError, defaults, load_yaml

from teachfit.workflow import paths
from teachfit.workflow.config import validate_config
from teachfit.io import DataError, write_text
from teachfit.pairs import read_pairs

DEFAULT_CONFIG = Path("config") / "config.yaml"
OVERLAY_DIR = Path("results") / "cli"
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SOURCE_FIELDS = ("format", "instruction_field", "input_field", "response_field", "messages_field")


class CliError(Exception):
    """A problem found before Snakemake starts; the message names it (exit status 2)."""


# --------------------------------------------------------------------------- config


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``over`` (nested dicts merge, other values replace), as
    Snakemake merges ``--configfile`` overlays onto the Snakefile's ``configfile``."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(workdir: Path, configfiles: Sequence[Path]) -> dict[str, Any]:
    """The workflow config as Snakemake will see it: ``config/config.yaml`` of ``workdir`` (the
    Snakefile's ``configfile``), then every ``configfiles`` overlay in order."""
    config: dict[str, Any] = {}
    for path in [workdir / DEFAULT_CONFIG, *configfiles]:
        if path == workdir / DEFAULT_CONFIG and not path.exists():
            continue
        if not path.is_file():
            raise CliError(f"--configfile {path}: file does not exist")
        data = load_yaml(path)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise CliError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
        config = merge(config, data)
    return config


def validated(config: dict[str, Any]) -> dict[str, Any]:
    """A validated copy (schema defaults filled); ConfigError becomes CliError."""
    try:
        return validate_config(copy.deepcopy(config))
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def need_alias(kind: str, alias: str, known: Sequence[str], option: str) -> None:
    if alias not in known:
        raise CliError(f"{option} {alias}: no {kind} {alias!r} in the config; "
                       f"{kind}s: {', '.join(sorted(known)) or '(none)'}")


def split_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def check_source(path: Path, entry: dict[str, Any], what: str) -> int:
    """Read a data file with the jobs' reader (:func:`teachfit.pairs.read_pairs`); return the usable
    rows. Raises CliError naming ``what`` when the file is missing, empty, has no usable row or a
    wrong field name."""
    try:
        pairs = read_pairs(path, entry)
    except DataError as exc:
        raise CliError(f"{what}: {exc}") from exc
    usable = int((pairs["status"] == "ok").sum())
    if usable == 0:
        counts = pairs.group_by("status").len().to_dicts()
        raise CliError(f"{what}: {path}: no usable (instruction, response) row in {pairs.height} records "
                       f"({ {c['status']: c['len'] for c in counts} })")
    return usable


def _relative(path: Path, workdir: Path) -> str:
    path = path.resolve()
    try:
        return str(path.relative_to(workdir))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- commands


def plan_rank_teachers(args: argparse.Namespace, config: dict[str, Any], workdir: Path) -> tuple[dict, list[str]]:
    """Overlay and targets of ``teachfit rank-teachers``."""
    teacher = config.get("teacher") or {}
    missing = [k for k in ("instructions", "generators", "bases", "reference_model", "reward")
               if k not in teacher]
    if missing:
        raise CliError(f"rank-teachers needs the teacher section of the config (teacher.{', teacher.'.join(missing)} "
                       "missing): the seed set the candidates answer, the candidate generators, the students, "
                       "the reference model and the reward model")
    models = list(config.get("models", {}))
    gens = dict(config.get("generators", {}))
    overlay: dict[str, Any] = {"teacher": {"ranking": {"activate": True, "measured": bool(args.measured)}}}
    candidates = split_list(args.generators) or list(teacher["generators"])
    for g in candidates:
        need_alias("generator", g, list(gens), "--generators")
    added: dict[str, Any] = {}
    for spec in args.add_dataset or []:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise CliError(f"--add-dataset {spec!r}: expected NAME=FILE")
        if not ALIAS.match(name):
            raise CliError(f"--add-dataset {name}: the name must be letters, digits and underscores, "
                           "starting with a letter")
        if name in gens or name in added:
            raise CliError(f"--add-dataset {name}: a generator of that name already exists; pick another name")
        path = Path(file)
        entry = {"path": _relative(path, workdir)}
        check_source(path, validated_source(entry), f"--add-dataset {name}")
        added[name] = {"kind": "dataset", "dataset": entry}
        candidates.append(name)
    if added:
        overlay["generators"] = added
    if args.generators or added:
        overlay["teacher"]["generators"] = candidates
    bases = split_list(args.bases)
    if bases:
        for b in bases:
            need_alias("model", b, models, "--bases")
        overlay["teacher"]["bases"] = bases
    merged = validated(merge(config, overlay))
    for g in merged["teacher"]["generators"]:
        entry = merged["generators"][g]
        if entry["kind"] == "dataset" and entry["dataset"].get("path") and g not in added:
            check_source(workdir / entry["dataset"]["path"], entry["dataset"], f"generators.{g}.dataset.path")
    return overlay, ["rank_teachers"]


def validated_source(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``generators.<name>.dataset`` entry with the schema's defaults filled in."""
    try:
        return defaults("generators.*", kind="dataset", dataset=entry)["dataset"]
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def plan_select_data(args: argparse.Namespace, config: dict[str, Any], workdir: Path) -> tuple[dict, list[str]]:
    """Overlay and targets of ``teachfit select-data``."""
    models = list(config.get("models", {}))
    entries = dict(config.get("select_data") or {})
    overlay: dict[str, Any] = {}
    if args.data is None:
        if args.name is None:
            raise CliError("select-data needs a data set: --data FILE --student ALIAS, or the NAME of a "
                           f"select_data entry of the config ({', '.join(entries) or 'none configured'})")
        if args.name not in entries:
            raise CliError(f"select-data {args.name}: no select_data entry {args.name!r} in the config; "
                           f"entries: {', '.join(sorted(entries)) or '(none)'}; or give --data FILE --student ALIAS")
        name = args.name
        entry = dict(entries[name])
        changes = {k: v for k, v in (("student", args.student), ("metric", args.metric),
                                     ("top_percent", args.top_percent),
                                     ("per_instruction", args.per_instruction)) if v is not None}
        if changes:
            overlay = {"select_data": {name: changes}}
            entry.update(changes)
    else:
        path = Path(args.data)
        name = args.name or re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
        if not ALIAS.match(name):
            name = f"data_{name}"
        if args.student is None:
            raise CliError("select-data --data needs --student ALIAS (the model whose losses score the data); "
                           f"models: {', '.join(sorted(models))}")
        entry = {"path": _relative(path, workdir), "student": args.student}
        for key in ("metric", "top_percent", "per_instruction", *SOURCE_FIELDS):
            value = getattr(args, key)
            if value is not None:
                entry[key] = value
        overlay = {"select_data": {name: entry}}
    if entry.get("student") is not None:
        need_alias("model", entry["student"], models, "--student")
    merged = validated(merge(config, overlay))
    full = merged["select_data"][name]
    if full.get("path"):
        where = "--data" if args.data is not None else f"select_data.{name}.path"
        src = Path(args.data) if args.data is not None else workdir / full["path"]
        check_source(src, full, where)
    return overlay, [paths.select_data(name, "selected.jsonl"), paths.table(f"select_data_{name}")]


def plan_run(args: argparse.Namespace, config: dict[str, Any], workdir: Path) -> tuple[dict, list[str]]:
    validated(config)
    return {}, list(args.targets)


# --------------------------------------------------------------------------- snakemake


def write_overlay(workdir: Path, label: str, overlay: dict[str, Any]) -> Path | None:
    """Write the command's overlay (unchanged files are left alone); None when there is none."""
    if not overlay:
        return None
    path = workdir / OVERLAY_DIR / f"{label}.yaml"
    text = (f"# written by `teachfit {label.split('.')[0].replace('_', '-')}`; add these keys to your config "
            "to make them permanent\n" + yaml.safe_dump(overlay, sort_keys=False))
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text(text, path)
    return path


def snakemake_command(args: argparse.Namespace, configfiles: Sequence[Path], overlay: Path | None,
                      targets: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(args.cores)]
    files = [str(p) for p in configfiles] + ([str(overlay)] if overlay else [])
    if files:
        cmd += ["--configfile", *files]
    if args.profile:
        cmd += ["--profile", args.profile]
    if args.workflow_profile:
        cmd += ["--workflow-profile", args.workflow_profile]
    if args.dry_run:
        cmd.append("-n")
    cmd += list(args.snakemake_args)
    if targets:
        cmd += ["--", *targets]
    return cmd


def report_after(command: str, workdir: Path, targets: Sequence[str]) -> None:
    """What the user asked for, printed after a successful (non-dry) run."""
    if command == "rank-teachers":
        verdict = workdir / "results" / "recommend" / "teacher_verdict.rst"
        print("\nteachfit: ranking in results/tables/teacher_ranking.csv, figure in "
              "results/figures/teacher/ranking.png\n")
        if verdict.exists():  # reStructuredText -> plain text for the terminal
            text = verdict.read_text(encoding="utf-8")
            print(re.sub(r"``([^`]*)``", r"\1", text).replace("**", ""))
    elif command == "select-data":
        selected, summary = targets
        print(f"\nteachfit: selected pairs (chat messages JSONL) in {selected}; what was kept and dropped, "
              f"and why: {summary}")
        table = workdir / summary
        if table.exists():
            import polars as pl

            df = pl.read_csv(table).filter(pl.col("rows") > 0).select("reason", "rows")
            for reason, rows in df.iter_rows():
                print(f"  {reason:<24} {rows}")


# --------------------------------------------------------------------------- argument parsing


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workflow (passed to Snakemake)")
    g.add_argument("-C", "--directory", default=".", help="workflow folder holding the Snakefile (default: .)")
    g.add_argument("--configfile", action="append", default=[], metavar="FILE",
                   help="a config overlay on config/config.yaml (repeatable, applied in order, as "
                        "snakemake --configfile)")
    g.add_argument("-n", "--dry-run", action="store_true", help="show the jobs, run nothing")
    g.add_argument("--cores", default="all", help="CPU cores for local jobs (default: all)")
    g.add_argument("--profile", help="Snakemake profile (e.g. profiles/slurm for a SLURM cluster)")
    g.add_argument("--workflow-profile", help="Snakemake workflow profile (default: profiles/default)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="teachfit",
        description="Which teacher to distil from, which examples to keep, for your own student and data "
                    "-- without fine-tuning; or the full studies. A front end over the Snakemake workflow: "
                    "arguments after `--` go to Snakemake unchanged.",
        epilog="Examples:\n"
               "  teachfit rank-teachers --add-dataset mine=answers.jsonl\n"
               "  teachfit select-data --data my_sft.jsonl --student gemma270m --metric icifd --top-percent 20\n"
               "  teachfit run --profile profiles/slurm",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("teachfit")
    except PackageNotFoundError:  # running from a source checkout
        ver = "source"
    ap.add_argument("--version", action="version", version=f"teachfit {ver}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rk = sub.add_parser(
        "rank-teachers", help="rank candidate teachers per student by CAR and other data metrics, no fine-tuning",
        description="Rank the teacher study's candidate generators (teacher.generators: models, or data sets "
                    "with --add-dataset) for each student (teacher.bases) by CAR and by reward, length, PPL and "
                    "IFD, from generation, rewards and loss scoring alone: no SFT or evaluation job runs. "
                    "Writes results/tables/teacher_ranking.csv, results/figures/teacher/ranking.png and a "
                    "verdict per student (printed at the end).")
    rk.add_argument("--generators", help="comma-separated candidates (default: teacher.generators)")
    rk.add_argument("--bases", help="comma-separated students, model aliases (default: teacher.bases)")
    rk.add_argument("--add-dataset", action="append", metavar="NAME=FILE",
                    help="add a data set (JSONL/JSON/Parquet of instruction/response rows or chat messages) as "
                         "candidate NAME; repeatable")
    rk.add_argument("--measured", action="store_true",
                    help="also compare with the ranks measured by the full teacher study (Spearman rho per "
                         "metric); runs its SFT and evaluation jobs unless they are done")
    _common(rk)

    sd = sub.add_parser(
        "select-data", help="keep the top-k%% of a data set for a student by IC-IFD, IFD or loss, no fine-tuning",
        description="Score every (instruction, response) pair of a data set under the student and keep the top "
                    "k%% by the metric: a ready-to-train chat-messages JSONL "
                    "(results/select_data/NAME/selected.jsonl) and a table of what was kept and dropped, and why "
                    "(results/tables/select_data_NAME.csv).")
    sd.add_argument("name", nargs="?", help="a select_data entry of the config, or the name for --data "
                                           "(default: the file's stem)")
    sd.add_argument("--data", metavar="FILE", help="JSONL / JSON / Parquet of instruction/response rows or chat messages")
    sd.add_argument("--student", metavar="ALIAS", help="model alias of the student (from the config's models)")
    sd.add_argument("--metric", choices=["icifd", "ifd", "loss"], help="icifd (default), ifd, or loss (lowest first)")
    sd.add_argument("--top-percent", type=float, help="percent of the scored pairs to keep (default 50)")
    sd.add_argument("--per-instruction", choices=["student_likelihood"],
                    help="first keep, per instruction (rows with the same system turn and instruction), the "
                         "response with the lowest L(A|Q) under the student (GRAPE); then the top-k%% by --metric")
    sd.add_argument("--format", choices=["auto", "pairs", "messages"], help="file layout (default: auto)")
    sd.add_argument("--instruction-field", help="instruction field (default: instruction)")
    sd.add_argument("--input-field", help="optional input field appended to the instruction (default: input)")
    sd.add_argument("--response-field", help="response field (default: the first of response, output, completion)")
    sd.add_argument("--messages-field", help="chat messages field (default: messages)")
    _common(sd)

    rn = sub.add_parser("run", help="the full workflow (every configured study) or the given targets",
                        description="Run the workflow as `snakemake` would, with the same config handling.")
    rn.add_argument("targets", nargs="*", help="Snakemake targets (files or rule names); default: all")
    _common(rn)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.snakemake_args = extra
    try:
        workdir = Path(args.directory).resolve()
        if not (workdir / "Snakefile").is_file():
            raise CliError(f"{workdir}: no Snakefile here; run teachfit in the workflow folder (a Teachfit "
                           "checkout) or pass -C/--directory")
        configfiles = [Path(f).resolve() for f in args.configfile]
        config = load_config(workdir, configfiles)
        planner = {"rank-teachers": plan_rank_teachers, "select-data": plan_select_data, "run": plan_run}
        overlay, targets = planner[args.command](args, config, workdir)
        label = args.command.replace("-", "_")
        if args.command == "select-data":
            label += "." + targets[0].split("/")[2]
        overlay_path = write_overlay(workdir, label, overlay)
    except (CliError, ConfigError, DataError) as exc:
        print(f"teachfit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    try:
        import snakemake  # noqa: F401  (the workflow extra)
    except ImportError:
        print("teachfit: error: Snakemake is not installed (pip install 'teachfit[workflow]')", file=sys.stderr)
        return 2
    cmd = snakemake_command(args, configfiles, overlay_path, targets)
    print("teachfit: " + " ".join(cmd[2:]), file=sys.stderr, flush=True)
    rc = subprocess.call(cmd, cwd=workdir, env=os.environ.copy())
    if rc == 0 and not args.dry_run:
        report_after(args.command, workdir, targets)
    return rc


if __name__ == "__main__":
    sys.exit(main())
