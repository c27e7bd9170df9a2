"""The experiment plan: which datasets, training runs and tables a config asks for.

Pure Python over the validated config, so the DAG's shape is unit-testable and
cheap to compute at paper scale. The Snakefile's ``rule all`` and wildcard
constraints come from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from teachfit.workflow import paths

SCENARIOS = ("evol_instruct", "auto_evol", "autoif")

#: Scoring conventions (the same names as ``teachfit.scoring.losses.CONVENTIONS``, which
#: tests/test_scoring.py checks; kept here so that the plan stays free of numpy / polars).
CONVENTIONS = ("evolution_analysis", "cherry", "chat")

#: Keys of ``evolver.scenarios.<scenario>`` that shape the plan (which jobs run, which file
#: holds the AutoIF seed instructions), not what one evolution job computes. They are kept
#: out of a job's ``settings`` param, so that e.g. adding an evolver or a round does not
#: re-run the other evolvers' jobs.
SCENARIO_PLAN_KEYS = ("activate", "evolvers", "rounds", "seed_instructions")

#: Scenarios whose evolution jobs record the evolver's top-1 log-probs (a ``.top1.parquet``
#: beside each round); AutoIF's propose/verify pipeline does not.
TOP1_SCENARIOS = ("evol_instruct", "auto_evol")

#: Selection methods that rank by a scores file (``results/scores/...``).
SCORED_SELECTION_METHODS = ("icifd", "ifd", "ppl", "length")


class PlanError(ValueError):
    """The config asks the plan something it does not define; the message names the key."""


@dataclass(frozen=True, order=True)
class Run:
    """One SFT run: a student fine-tuned on one training set."""

    dataset: str
    generator: str
    selection: str
    base: str

    @property
    def path(self) -> str:
        """The run's stem in every per-run path (:func:`teachfit.workflow.paths.run_stem`)."""
        return paths.run_stem(self.dataset, self.generator, self.selection, self.base)


def selection_label(method: str, top_percent: float) -> str:
    if method == "full":
        return "full"
    pct = f"{top_percent:g}".replace(".", "p")
    return f"{method}{pct}"


def evolved_name(seedset: str, scenario: str, evolver: str) -> str:
    """The data set name of one evolver's evolved set (``results/instructions/<name>.parquet``).

    Only ever built here, never split again: :meth:`Plan.evolved_origin` maps a name back to
    its (seedset, scenario, evolver).
    """
    return f"{seedset}-{scenario}-{evolver}"


def pool_name(seedset: str, scenario: str, evolver: str) -> str:
    """The data set name of one evolver's pool of valid instructions, the set the teacher answers
    before the response checks and the equal-size sets (rule ``pool_evolved``)."""
    return f"{evolved_name(seedset, scenario, evolver)}-pool"


#: ``ranked(seedset, scenario) -> evolvers``: which evolvers of a scenario kept enough valid
#: instructions to be ranked (rule ``merge_evolved``'s ranking file, read through its checkpoint)
Ranked = Callable[[str, str], Sequence[str]]


def scenario_settings(section: dict[str, Any]) -> dict[str, Any]:
    """What one evolution job of a scenario computes with: the validated
    ``evolver.scenarios.<scenario>`` section without :data:`SCENARIO_PLAN_KEYS`."""
    return {k: v for k, v in section.items() if k not in SCENARIO_PLAN_KEYS}


@dataclass
class Plan:
    config: dict[str, Any]
    names: dict[str, list[str]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    #: (dataset, generator, scorer, convention) of every scores file
    scores: set[tuple[str, str, str, str]] = field(default_factory=set)
    #: (seedset, scenario, evolver) of every evolved set, in plan order
    evolved: list[tuple[str, str, str]] = field(default_factory=list)

    # ------------------------------------------------------------------ helpers
    def alternation(self, key: str) -> str:
        values = sorted(set(self.names.get(key, [])), key=len, reverse=True)
        if not values:
            return r"(?!x)x"  # matches nothing
        return "|".join(re.escape(v) for v in values)

    def teacher_on(self) -> bool:
        return bool(self.config.get("teacher", {}).get("activate"))

    def teacher_configured(self) -> bool:
        """The teacher section is in use: the full study, or only its ranking without fine-tuning
        (``teacher.ranking.activate``, set by ``teachfit rank-teachers``)."""
        t = self.config.get("teacher", {})
        return self.teacher_on() or bool(t.get("ranking", {}).get("activate"))

    def evolver_on(self) -> bool:
        return bool(self.config["evolver"]["activate"])

    def ifs_on(self) -> bool:
        return bool(self.config.get("ifs", {}).get("activate"))

    def active_scenarios(self) -> list[str]:
        sc = self.config["evolver"]["scenarios"]
        return [s for s in SCENARIOS if sc[s]["activate"]]

    def scenario_evolvers(self, scenario: str) -> list[str]:
        e = self.config["evolver"]
        return list(e["scenarios"][scenario]["evolvers"] or e["evolvers"])

    def evolved_datasets(self) -> list[str]:
        return [evolved_name(s, sc, ev) for s, sc, ev in self.evolved]

    def evolver_pools(self) -> list[str]:
        """The pool data set of every evolved set (:func:`pool_name`), in plan order."""
        return [pool_name(s, sc, ev) for s, sc, ev in self.evolved]

    def is_trained(self, run: Run, ranked: Ranked | None) -> bool:
        """Whether ``run`` trains: every run that is not on an evolved set, and the runs on the
        evolved sets of ranked evolvers (all of them when ``ranked`` is None)."""
        if ranked is None or run.dataset not in self.evolved_datasets():
            return True
        o = self.evolved_origin(run.dataset)
        return o["evolver"] in ranked(o["seedset"], o["scenario"])

    def trained_runs(self, ranked: Ranked | None) -> list[Run]:
        """:attr:`runs` without the runs on the sets of evolvers that were not ranked."""
        return [r for r in self.runs if self.is_trained(r, ranked)]

    def evolved_origin(self, dataset: str) -> dict[str, str]:
        """``{"seedset", "scenario", "evolver"}`` of an evolved data set name; PlanError if
        ``dataset`` is not one of :meth:`evolved_datasets`."""
        for s, sc, ev in self.evolved:
            if evolved_name(s, sc, ev) == dataset:
                return {"seedset": s, "scenario": sc, "evolver": ev}
        raise PlanError(f"{dataset!r} is not an evolved data set of this config; "
                        f"evolved sets: {', '.join(self.evolved_datasets()) or '(none)'}")

    def scenario_rounds(self, scenario: str) -> int:
        """Evolution rounds of a scenario (AutoIF: one)."""
        if scenario == "autoif":
            return 1
        return int(self.config["evolver"]["scenarios"][scenario]["rounds"])

    def evolution_rounds(self, seedset: str | None = None, scenario: str | None = None,
                         top1: bool = False) -> list[dict[str, Any]]:
        """``{"seedset", "scenario", "evolver", "round"}`` of every evolution round file
        (``results/evolved/<seedset>/<evolver>/<scenario>/round<round>.parquet``), in plan order,
        optionally of one seed set / scenario, or (``top1``) only rounds that record the
        evolver's top-1 log-probs (:data:`TOP1_SCENARIOS`)."""
        return [
            {"seedset": s, "scenario": sc, "evolver": ev, "round": k}
            for s, sc, ev in self.evolved
            if (seedset is None or s == seedset) and (scenario is None or sc == scenario)
            and (not top1 or sc in TOP1_SCENARIOS)
            for k in range(1, self.scenario_rounds(sc) + 1)
        ]

    def evolver_runs(self, part: str, ranked: Ranked | None = None) -> list[dict[str, Any]]:
        """The SFT runs one evolver table compares, each as ``{"dataset", "seedset", "scenario",
        "evolver", "generator", "selection", "base"}`` (sorted like :attr:`runs`), of ranked
        evolvers only (:meth:`is_trained`).

        ``part="comparison"``: every evolved set trained in full; ``part="selection"``: the
        selected subsets plus the full sets they were selected from (``evolver.selection``).
        """
        e = self.config["evolver"]
        evolved = set(self.evolved_datasets())
        sel = e["selection"]
        sel_evolvers = sel["evolvers"] or e["evolvers"]
        out = []
        for r in self.runs:
            if r.dataset not in evolved or not self.is_trained(r, ranked):
                continue
            origin = self.evolved_origin(r.dataset)
            if part == "comparison":
                keep = r.selection == "full"
            elif part == "selection":
                keep = r.selection != "full" or (origin["scenario"] == sel["scenario"]
                                                 and origin["evolver"] in sel_evolvers)
            else:
                raise ValueError(f"evolver_runs: part must be 'comparison' or 'selection', got {part!r}")
            if keep:
                out.append({"dataset": r.dataset, **origin, "generator": r.generator,
                            "selection": r.selection, "base": r.base})
        if part == "selection":  # the selected subsets first, then the full sets (as before)
            out = ([m for m in out if m["selection"] != "full"]
                   + [m for m in out if m["selection"] == "full"])
        return out

    def evolution_settings(self, scenario: str) -> dict[str, Any]:
        """The ``settings`` param of scenario ``scenario``'s evolution jobs (see :func:`scenario_settings`)."""
        return scenario_settings(self.config["evolver"]["scenarios"][scenario])

    def selection_methods(self) -> dict[str, dict[str, Any]]:
        """The ``selection`` param of each training set (label -> ``method``, ``top_percent``,
        ``seed`` and the selection semantics' ``version``, ``evolver.selection.version``, so that
        a change of the selection rules re-runs every ``select_trainset`` job)."""
        sel = self.config["evolver"]["selection"]
        full = {"method": "full", "top_percent": 100.0, "version": int(sel["version"])}
        if not (self.evolver_on() and sel["activate"]):
            return {"full": full}
        out = {"full": full}
        for m in sel["methods"]:
            out[selection_label(m, sel["top_percent"])] = {
                "method": m, "top_percent": float(sel["top_percent"]),
                "seed": int(self.config["seed"]), "version": int(sel["version"]),
            }
        return out

    def selection_settings(self, selection: str) -> dict[str, Any]:
        return self.selection_methods()[selection]

    def selection_scorer(self, selection: str) -> dict[str, str] | None:
        """``{"scorer", "convention"}`` of the scores a selection ranks by (``None`` for
        ``random`` / ``full``): ``evolver.scoring_model`` under ``evolver.selection.convention``.
        The length baseline needs them too: it counts the instruction's tokens under the
        scorer's tokenizer (Evolution-Analysis ``select_data.py:54``)."""
        method = self.selection_methods()[selection]["method"]
        if method in SCORED_SELECTION_METHODS:
            e = self.config["evolver"]
            return {"scorer": e["scoring_model"], "convention": e["selection"]["convention"]}
        return None

    def teacher_score_keys(self) -> list[dict[str, str]]:
        """``{"generator", "scorer", "convention"}`` of every scores file the teacher study reads:
        each generator under each base and the reference model, under CAR's convention
        (``teacher.car.convention``: loss, PPL, length) and the IFD convention
        (``teacher.ifd_convention``), each once; also when only the ranking is on
        (:meth:`teacher_configured`)."""
        if not self.teacher_configured():
            return []
        t = self.config["teacher"]
        scorers = dict.fromkeys([*t["bases"], t["reference_model"]])
        conventions = dict.fromkeys([t["car"]["convention"], t["ifd_convention"]])
        return [{"generator": g, "scorer": s, "convention": c}
                for g in t["generators"] for s in scorers for c in conventions]

    def reward_settings(self, dataset: str) -> dict[str, Any]:
        """The reward setting (``type``, ``model``, ``batch_size``, ``version``) that rates the
        responses to ``dataset``.

        Each study owns its reward model: an evolved set (:meth:`evolved_datasets`) is rated
        with ``evolver.reward`` (``model: null`` = ``evolver.judge``); every other data set
        (the teacher study's instructions, its win-rate reference answers, IFS tone pairs)
        with ``teacher.reward`` when the teacher section is in use (:meth:`teacher_configured`:
        the study, or its ranking alone, is on), else with ``evolver.reward``. Raises PlanError
        when neither applies.
        """
        evolved = {*self.evolved_datasets(), *self.evolver_pools()}
        if dataset in evolved or (self.evolver_on() and not self.teacher_configured()):
            e = self.config["evolver"]
            reward = dict(e["reward"])
            reward["model"] = reward["model"] or e["judge"]
            return reward
        if self.teacher_configured():
            return dict(self.config["teacher"]["reward"])
        raise PlanError(f"no reward model rates data set {dataset!r}: neither the teacher study "
                        "(teacher.reward) nor the evolver study (evolver.reward) is on")

    def reward_model(self, dataset: str) -> str:
        """The model alias of :meth:`reward_settings`."""
        return self.reward_settings(dataset)["model"]

    def winrate_benchmarks(self) -> list[str]:
        """Names of the active win-rate benchmarks (``teacher.winrate.benchmarks``), in config
        order; none when the teacher study or its win rates are off."""
        if not self.teacher_on() or not self.config["teacher"]["winrate"]["activate"]:
            return []
        return [name for name, b in self.config["teacher"]["winrate"]["benchmarks"].items() if b["activate"]]

    def ranking_measured(self) -> bool:
        """Whether rank_teachers compares its predicted ranks with the full teacher study's
        measured ones (``teacher.ranking.measured``; null = ``teacher.activate``). Only then is
        ``teacher_performance.csv`` (and so SFT and evaluation) part of its DAG."""
        measured = self.config.get("teacher", {}).get("ranking", {}).get("measured")
        return self.teacher_on() if measured is None else bool(measured)

    def has_ifs_curve(self, run: Run) -> bool:
        """Whether the IFS study scores ``run``'s checkpoints: the study and ``ifs.checkpoints``
        are on and ``ifs.runs`` names the run's study (``all``; ``teacher``: the teacher study's
        runs on ``teacher.instructions``; ``evolver``: runs on evolved sets)."""
        ifs = self.config["ifs"]
        if not (self.ifs_on() and ifs.get("checkpoints", True)):
            return False
        which = ifs.get("runs", "all")
        if which == "all":
            return True
        evolved = run.dataset in set(self.evolved_datasets())
        return evolved if which == "evolver" else not evolved

    def ifs_runs(self, ranked: Ranked | None = None) -> list[Run]:
        """The runs whose checkpoints the IFS study scores: the trained runs
        (:meth:`trained_runs`) that :meth:`has_ifs_curve`."""
        return [r for r in self.trained_runs(ranked) if self.has_ifs_curve(r)]

    # ------------------------------------------------------------------ targets
    def final_outputs(self, ranked: Ranked | None = None) -> list[str]:
        """Every target of ``rule all``; ``ranked`` (the ranking checkpoint) drops the per-run IFS
        figures of evolvers that were not ranked."""
        T, F = paths.table, paths.figure
        out: list[str] = []
        if self.teacher_on():
            out += [
                T("teacher_performance"),
                T("teacher_data_metrics"),
                T("teacher_metric_correlations"),
                F("teacher/performance_heatmap"),
                F("teacher/best_generator"),
                F("teacher/scatter_car"),
            ]
        if self.teacher_configured():  # the ranking without fine-tuning (also with the study off)
            out += [T("teacher_ranking"), F("teacher/ranking")]
        if self.evolver_on():
            out += [
                T("evolver_comparison"),
                T("evolved_instruction_stats"),
                F("evolver/top1_probability"),
                F("evolver/difficulty_per_round"),
                F("evolver/gate_counts"),
            ]
            if self.config["evolver"]["selection"]["activate"]:
                out += [T("selection_comparison"), F("evolver/selection_comparison")]
        if self.ifs_on():
            out += [T("ifs_models"), T("ifs_checkpoints"), T("early_stopping"), T("tone_classifier")]
            if self.config["ifs"]["objecqa"]["activate"]:
                out.append(T("objecqa_judge"))
            out += [paths.ifs_figure(r.path) for r in self.ifs_runs(ranked)]
        for name in self.names["select_data"]:
            out += [paths.select_data(name, "selected.jsonl"), T(f"select_data_{name}")]
        out += [paths.model_eval(m) for m in self.names["eval_models"]]
        out += [T("eval_summary")] if self.runs else []
        return out


def build_plan(config: dict[str, Any]) -> Plan:
    p = Plan(config=config)
    models = list(config["models"])
    seedsets = list(config["seedsets"])
    gens = list(config.get("generators", {}))
    students: set[str] = set()
    evolvers: list[str] = []
    datasets: list[str] = list(seedsets)
    runs: set[Run] = set()
    scores: set[tuple[str, str, str, str]] = set()

    if p.teacher_on():
        t = config["teacher"]
        students |= set(t["bases"])
        for g in t["generators"]:
            for b in t["bases"]:
                runs.add(Run(t["instructions"], g, "full", b))
        for k in p.teacher_score_keys():
            scores.add((t["instructions"], k["generator"], k["scorer"], k["convention"]))

    selections = p.selection_methods()
    if p.evolver_on():
        e = config["evolver"]
        evolvers = list(e["evolvers"])
        students |= set(e["bases"])
        for s in e["seedsets"]:
            for sc in p.active_scenarios():
                for ev in p.scenario_evolvers(sc):
                    p.evolved.append((s, sc, ev))
        datasets += p.evolved_datasets() + p.evolver_pools()
        sel_scenario = e["selection"]["scenario"]
        sel_evolvers = e["selection"]["evolvers"] or evolvers
        for s, sc, ev in p.evolved:
            name = evolved_name(s, sc, ev)
            for b in e["bases"]:
                runs.add(Run(name, e["teacher"], "full", b))
                if (sc == sel_scenario and ev in sel_evolvers
                        and e["selection"]["activate"]):
                    for label in selections:
                        runs.add(Run(name, e["teacher"], label, b))
            if sc == sel_scenario and ev in sel_evolvers and e["selection"]["activate"] and any(
                    m in SCORED_SELECTION_METHODS for m in e["selection"]["methods"]):
                scores.add((name, e["teacher"], e["scoring_model"], e["selection"]["convention"]))

    ifs_models = list(config.get("ifs", {}).get("models", [])) if p.ifs_on() else []
    eval_models = sorted(students)
    p.names = {
        "models": models,
        "seedsets": seedsets,
        "generators": gens,
        "model_generators": [g for g in gens if config["generators"][g].get("kind", "model") == "model"],
        "dataset_generators": [g for g in gens if config["generators"][g].get("kind") == "dataset"],
        "per_instruction_generators": [g for g in gens if config["generators"][g].get("kind") == "per_instruction"],
        "select_data": list(config.get("select_data", {})),
        "datasets": datasets,
        # the data sets the generic answer rules answer (select_responses): all but the evolved
        # sets, whose responses come from their pool's (rule split_evolved)
        "answered": [d for d in datasets if d not in set(p.evolved_datasets())],
        "students": sorted(students) or models,
        "evolvers": evolvers or ["none"],
        "scenarios": list(SCENARIOS),
        "conventions": list(CONVENTIONS),
        "selections": list(selections),
        "eval_models": eval_models,
        "ifs_models": ifs_models,
        "benchmarks": p.winrate_benchmarks() or ["none"],
    }
    p.runs = sorted(runs)
    p.scores = scores
    return p
