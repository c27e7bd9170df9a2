"""Validation of a whole workflow config against ``config/schema.yaml`` (JSON Schema 2020-12):
the composition root's checks, run when the Snakefile is parsed and by the ``teachfit`` CLI.

* defaults from the schema are filled in (:mod:`teachfit.schema`),
* every error names the field as a dotted path and, for enums, the allowed values,
* cross-references (a generator naming an unknown model, …) are checked after the
  schema, and each stage's settings class checks its own section, so a bad config fails
  before any job runs. This is the only module that imports the stages' settings classes.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from teachfit.evaluation.lm_eval import EvalSettings
from teachfit.evaluation.winrate_sets import FORMAT_PARTS
from teachfit.figures import FigureStyle
from teachfit.schema import (
    ConfigError,
    _extend_with_default,
    _format_error,
    check_duplicate_keys,
    load_schema,
    load_yaml,
    non_finite_numbers,
)
from teachfit.scoring.losses import check_scoring_section
from teachfit.studies.evolver.gate_checks import GateSettings
from teachfit.studies.ifs.prompts import IfsPromptSettings
from teachfit.studies.ifs.scores import PlateauSettings
from teachfit.studies.ifs.tone import ToneClassifierSettings, ToneDataSettings
from teachfit.training.sft import check_sft_settings

__all__ = ["ConfigError", "check_duplicate_keys", "export_workflow_dir", "check_references", "check_stage_settings",
           "load_yaml", "validate_config", "winrate_problems"]


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fill defaults in place and validate; raise ConfigError listing every problem."""
    from jsonschema import Draft202012Validator

    schema = schema if schema is not None else load_schema()
    validator = _extend_with_default(Draft202012Validator, schema.get("$defs"))(schema)
    # two passes: the first fills defaults of objects that are themselves defaults
    for _ in range(2):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = sorted({_format_error(e) for e in errors})
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    problems = non_finite_numbers(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    check_references(config)
    check_stage_settings(config)
    return config


def check_stage_settings(config: dict[str, Any]) -> None:
    """Checks stricter than the schema, run on the sections the rules pass unchanged, so that
    they fail here, not inside a job: the settings dataclasses' ``__post_init__`` and
    :func:`teachfit.training.sft.check_sft_settings`."""
    sections = [
        ("sft", check_sft_settings, config.get("sft")),
        ("scoring", check_scoring_section, config.get("scoring")),
        ("eval", EvalSettings.from_dict, config.get("eval")),
        ("analysis.figures", FigureStyle.from_dict, config.get("analysis", {}).get("figures")),
    ]
    if config.get("evolver", {}).get("activate"):
        sections.append(("evolver.gate", GateSettings.from_dict, config["evolver"].get("gate")))
    ifs = config.get("ifs", {})
    if ifs.get("activate"):
        sections += [(f"ifs.{key}", cls.from_dict, ifs.get(key)) for key, cls in (
            ("tone_data", ToneDataSettings), ("classifier", ToneClassifierSettings),
            ("prompts", IfsPromptSettings), ("early_stopping", PlateauSettings))]
    problems = []
    for where, check, section in sections:
        if section is None:
            continue
        try:
            check(copy.deepcopy(section))
        except (ValueError, TypeError) as exc:
            problems.append(f"config.{where}: {exc}")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def winrate_problems(benchmarks: dict[str, Any], seedsets: dict[str, Any], gens: dict[str, Any],
                     need_model: Any) -> list[str]:
    """Cross-field checks of ``teacher.winrate.benchmarks`` (active ones only): sources valid for
    their role (instructions: seedset or hub; reference: generator, only with seed-set instructions,
    or hub), hub formats that hold that part, a judge model, and length control / protocol /
    judge_prompt combinations the judge supports."""
    problems: list[str] = []
    active = {k: v for k, v in benchmarks.items() if v.get("activate", True)}
    if not active:
        problems.append("config.teacher.winrate: activate is true but no benchmark is active "
                        "(teacher.winrate.benchmarks)")
    for name, b in active.items():
        where = f"config.teacher.winrate.benchmarks.{name}"
        need_model(f"teacher.winrate.benchmarks.{name}.judge", b.get("judge"))
        ins, ref = b.get("instructions", {}), b.get("reference", {})
        if "generator" in ins:
            problems.append(f"{where}.instructions: a generator gives reference outputs, not instructions; "
                            "use {seedset: ...} or {hub: ...}")
        if "seedset" in ref:
            problems.append(f"{where}.reference: a seed set has no outputs; use {{generator: ...}} or {{hub: ...}}")
        if "seedset" in ins and ins["seedset"] not in seedsets:
            problems.append(f"{where}.instructions.seedset: unknown seed set {ins['seedset']!r}")
        if "generator" in ref:
            if ref["generator"] not in gens:
                problems.append(f"{where}.reference.generator: unknown generator {ref['generator']!r}")
            if "seedset" not in ins:
                problems.append(f"{where}.reference.generator: a generator answers seed-set instructions; "
                                "hub instructions need hub reference outputs")
        for part, src in (("instructions", ins), ("reference", ref)):
            hub = src.get("hub")
            if hub and part not in FORMAT_PARTS.get(hub.get("format"), ()):
                problems.append(f"{where}.{part}.hub.format: {hub.get('format')!r} does not hold {part}")
        protocol, lc = b.get("protocol", "pairwise_ab"), b.get("length_controlled", "inhouse_minimal")
        if lc == "alpaca_eval":
            if protocol != "alpaca_eval2":
                problems.append(f"{where}.length_controlled: 'alpaca_eval' needs protocol alpaca_eval2")
            if (ins.get("hub") or {}).get("format") != "alpaca_eval":
                problems.append(f"{where}.length_controlled: 'alpaca_eval' needs AlpacaEval's instructions "
                                "(instructions.hub.format alpaca_eval): its GLM looks up each instruction's "
                                "difficulty by position")
        if protocol == "arena_hard" and lc != "none":
            problems.append(f"{where}.length_controlled: protocol arena_hard reports the raw win rate; set none")
        if protocol == "pairwise_ab" and b.get("judge_prompt"):
            problems.append(f"{where}.judge_prompt: applies to alpaca_eval2 and arena_hard only")
        if b.get("judge_prompt") and not Path(b["judge_prompt"]).is_file():
            problems.append(f"{where}.judge_prompt: {b['judge_prompt']} is not a file")
    return problems


def per_instruction_problems(name: str, g: dict[str, Any], gens: dict[str, Any]) -> list[str]:
    """Problems of a ``per_instruction`` generator: no model, one response per instruction, and
    candidates that are defined generators of kind model or dataset (no mixed teacher of mixed
    teachers, so the DAG has no cycle)."""
    out = []
    where = f"config.generators.{name}"
    if "model" in g:
        out.append(f"{where}: a per_instruction generator takes its responses from its candidates "
                   f"(per_instruction.generators); remove 'model' ({g['model']!r})")
    if g.get("n", 1) != 1 or g.get("select", "first") != "first":
        out.append(f"{where}: a per_instruction generator has one response per instruction; n must be 1 "
                   "and select 'first'")
    for i, c in enumerate(g["per_instruction"].get("generators", [])):
        if c not in gens:
            out.append(f"{where}.per_instruction.generators[{i}]: unknown generator {c!r}; "
                       f"defined: {', '.join(sorted(gens))}")
        elif gens[c].get("kind") == "per_instruction":
            out.append(f"{where}.per_instruction.generators[{i}]: {c!r} is itself a per_instruction "
                       "generator; list model or dataset generators")
    return out


def check_references(config: dict[str, Any]) -> None:
    """Cross-field checks that JSON Schema cannot express."""
    problems: list[str] = []
    models = config.get("models", {})
    gens = config.get("generators", {})
    seedsets = config.get("seedsets", {})

    def need_model(where: str, alias: str | None, kinds: tuple[str, ...] | None = None) -> None:
        if alias is None:
            return
        if alias not in models:
            problems.append(f"config.{where}: unknown model {alias!r}; defined models: "
                            f"{', '.join(sorted(models)) or '(none)'}")
        elif kinds and models[alias].get("kind") not in kinds:
            problems.append(f"config.{where}: model {alias!r} is kind "
                            f"{models[alias].get('kind')!r}; need one of {list(kinds)}")

    for name, g in gens.items():
        if g.get("kind") == "dataset":
            # responses come from a file: no model, one response per instruction
            if "model" in g:
                problems.append(f"config.generators.{name}: a dataset generator takes its responses from "
                                f"generators.{name}.dataset; remove 'model' ({g['model']!r}) or set kind: model")
            if g.get("n", 1) != 1 or g.get("select", "first") != "first":
                problems.append(f"config.generators.{name}: a dataset generator has one response per "
                                "instruction; n must be 1 and select 'first'")
            continue
        if g.get("kind") == "per_instruction":
            problems += per_instruction_problems(name, g, gens)
            need_model(f"generators.{name}.per_instruction.student", g["per_instruction"].get("student"),
                       ("instruct", "base"))
            continue
        need_model(f"generators.{name}.model", g.get("model"), ("instruct", "base"))
        if g.get("select", "first") != "first" and g.get("n", 1) < 2:
            problems.append(f"config.generators.{name}: select={g['select']!r} needs n >= 2")
        if g.get("n", 1) > 1 and g.get("temperature", 0.0) == 0.0:
            problems.append(f"config.generators.{name}: n={g['n']} samples with temperature 0 "
                            "would be identical; set temperature > 0")
    t = config.get("teacher", {})
    # checked also when only the ranking without fine-tuning is on (rank_teachers, `teachfit rank-teachers`)
    if t.get("activate") or t.get("ranking", {}).get("activate"):
        for i, g in enumerate(t.get("generators", [])):
            if g not in gens:
                problems.append(f"config.teacher.generators[{i}]: unknown generator {g!r}; "
                                f"defined: {', '.join(sorted(gens)) or '(none)'}")
        for i, b in enumerate(t.get("bases", [])):
            need_model(f"teacher.bases[{i}]", b, ("base", "instruct"))
        need_model("teacher.reference_model", t.get("reference_model"), ("instruct", "base"))
        reward = t.get("reward", {})
        # a judge rates with a causal LM; a classifier is a sequence-classification reward model
        need_model("teacher.reward.model", reward.get("model"),
                   ("reward",) if reward.get("type") == "classifier" else ("instruct", "base"))
        if t.get("instructions") not in seedsets:
            problems.append(f"config.teacher.instructions: unknown seed set {t.get('instructions')!r}; "
                            f"defined: {', '.join(sorted(seedsets))}")
        w = t.get("winrate", {})
        if w.get("activate"):
            problems += winrate_problems(w.get("benchmarks", {}), seedsets, gens, need_model)
            # the students answer with their base model's engine (teachfit.evaluation.winrate.answer_winrate)
            lora = config.get("sft", {}).get("method") == "lora"
            for i, b in enumerate(t.get("bases", [])):
                backend = models.get(b, {}).get("backend")
                if backend == "openai" or (backend == "vllm" and lora):
                    problems.append(f"config.teacher.bases[{i}]: model {b!r} has backend {backend!r}, but the "
                                    "win-rate answers of its fine-tuned students need 'transformers' (LoRA "
                                    "adapters or full models) or 'vllm' with sft.method full")
        if len(set(t.get("generators", []))) != len(t.get("generators", [])):
            problems.append("config.teacher.generators: duplicate generator names")
    e = config.get("evolver", {})
    if e.get("activate"):
        for i, m in enumerate(e.get("evolvers", [])):
            need_model(f"evolver.evolvers[{i}]", m, ("instruct", "base"))
        if e.get("teacher") not in gens:
            problems.append(f"config.evolver.teacher: unknown generator {e.get('teacher')!r}")
        elif gens[e["teacher"]].get("kind") in ("dataset", "per_instruction"):
            problems.append(f"config.evolver.teacher: generator {e['teacher']!r} is a "
                            f"{gens[e['teacher']]['kind']} generator; "
                            "the evolver teacher must answer newly evolved instructions (kind model)")
        evs = set(e.get("evolvers", []))
        subsets = {f"evolver.scenarios.{sc}.evolvers": (e.get("scenarios", {}).get(sc, {}) or {}).get("evolvers")
                   for sc in ("evol_instruct", "auto_evol", "autoif")}
        subsets["evolver.selection.evolvers"] = (e.get("selection", {}) or {}).get("evolvers")
        for where, sub in subsets.items():
            bad = sorted(set(sub or []) - evs)
            if bad:
                problems.append(f"config.{where}: {bad} not in evolver.evolvers {sorted(evs)}")
        for i, s in enumerate(e.get("seedsets", [])):
            if s not in seedsets:
                problems.append(f"config.evolver.seedsets[{i}]: unknown seed set {s!r}")
        for i, b in enumerate(e.get("bases", [])):
            need_model(f"evolver.bases[{i}]", b, ("instruct", "base"))
        need_model("evolver.judge", e.get("judge"), ("instruct", "base"))
        reward = e.get("reward", {})
        if reward.get("type") == "classifier" and reward.get("model") is None:
            problems.append("config.evolver.reward.model: type 'classifier' needs a reward model "
                            "(null means evolver.judge, an LLM judge)")
        need_model("evolver.reward.model", reward.get("model"),
                   ("reward",) if reward.get("type") == "classifier" else ("instruct", "base"))
        need_model("evolver.embedding_model", e.get("embedding_model"), ("encoder",))
        need_model("evolver.scoring_model", e.get("scoring_model"), ("instruct", "base"))
    for name, entry in config.get("select_data", {}).items():
        need_model(f"select_data.{name}.student", entry.get("student"), ("instruct", "base"))
    f = config.get("ifs", {})
    if f.get("activate"):
        for i, m in enumerate(f.get("models", [])):
            need_model(f"ifs.models[{i}]", m, ("instruct", "base"))
        need_model("ifs.classifier.encoder", f.get("classifier", {}).get("encoder"), ("encoder",))
        need_model("ifs.objecqa.judge", f.get("objecqa", {}).get("judge"), ("instruct", "base"))
        answers = f.get("pairs", {}).get("answers", {}) or {}
        a_set, a_gen = answers.get("seedset"), answers.get("generator")
        if bool(a_set) != bool(a_gen):
            problems.append("config.ifs.pairs.answers: set both seedset and generator, or neither "
                            f"(got seedset={a_set!r}, generator={a_gen!r})")
        if a_set and a_set not in seedsets:
            problems.append(f"config.ifs.pairs.answers.seedset: unknown seed set {a_set!r}; "
                            f"defined: {', '.join(sorted(seedsets))}")
        if a_gen and a_gen not in gens:
            problems.append(f"config.ifs.pairs.answers.generator: unknown generator {a_gen!r}; "
                            f"defined: {', '.join(sorted(gens)) or '(none)'}")
    if config.get("eval", {}).get("checkpoints") == "final_and_selected" and not (
            f.get("activate") and f.get("checkpoints", True)):
        problems.append("config.eval.checkpoints: final_and_selected evaluates the IFS-selected checkpoint, "
                        "which needs ifs.activate and ifs.checkpoints true; choose final or all")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def export_workflow_dir(basedir: str | Path) -> None:
    """Set ``TEACHFIT_WORKFLOW`` to the workflow's folder (``workflow.basedir``) for the jobs and
    for conda: each ``envs/*.yaml`` installs the project with ``-e ${TEACHFIT_WORKFLOW}``, since
    Snakemake builds an env from a copy of its yaml in ``.snakemake/conda/`` where a relative path
    would point elsewhere (docs/environments.md). Called once while the Snakefile is parsed."""
    os.environ["TEACHFIT_WORKFLOW"] = str(basedir)
