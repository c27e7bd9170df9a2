"""teachfit.workflow.inputs: the rules' input and params functions, called as the rule files bind
them (config, plan, wildcards), on the configs the workflow tests run."""

import ast
import copy
import inspect
import re
import subprocess
import sys
from types import SimpleNamespace as W

import pytest
from snakemake.utils import update_config

from teachfit.schema import load_yaml
from teachfit.workflow import inputs, paths
from teachfit.workflow.config import validate_config
from teachfit.workflow.plan import SCORED_SELECTION_METHODS, build_plan, evolved_name, pool_name


def _config(root, *overlays, edit=None):
    """config/config.yaml with the overlays on top, as ``snakemake --configfile`` merges them."""
    cfg = load_yaml(root / "config" / "config.yaml")
    for o in overlays:
        update_config(cfg, load_yaml(root / o))
    if edit:
        edit(cfg)
    cfg = validate_config(cfg)
    return cfg, build_plan(cfg)


@pytest.fixture(scope="module")
def studies(repo_root):
    return _config(repo_root, "tests/configs/tiny.yaml", "tests/configs/tiny_studies.yaml")


@pytest.fixture(scope="module")
def studies_all_curves(repo_root):
    """tiny_studies with IFS curves on every run (ifs.runs: all), evolved runs included."""
    def edit(c):
        c["ifs"]["runs"] = "all"

    return _config(repo_root, "tests/configs/tiny.yaml", "tests/configs/tiny_studies.yaml", edit=edit)


@pytest.fixture(scope="module")
def paper(repo_root):
    return _config(repo_root, "config/paper.yaml")


def _all(seedset, scenario):
    return ["tiny_inst", "tiny_base"]


def _inst_only(seedset, scenario):
    return ["tiny_inst"]


def test_bind_gives_a_function_of_the_wildcards(studies):
    cfg, plan = studies
    fn = inputs.bind(inputs.selection_scores, cfg, plan)
    assert fn.__name__ == "selection_scores" and fn.__doc__ == inputs.selection_scores.__doc__
    assert list(inspect.signature(fn).parameters) == ["wildcards"]
    wc = W(dataset="tiny-evol_instruct-tiny_inst", generator="t_greedy", selection="icifd50")
    assert fn(wc) == inputs.selection_scores(cfg, plan, wc)
    ranked = inputs.bind(inputs.evolved_stats, cfg, plan, ranked=_inst_only)
    assert ranked(W()) == inputs.evolved_stats(cfg, plan, W(), ranked=_inst_only)


def test_selection_scores_follow_the_method(studies):
    """Scored methods read the scoring model's scores under the selection convention; random and
    full data read none."""
    cfg, plan = studies
    e = cfg["evolver"]
    labels = plan.names["selections"]
    assert set(labels) == {"full", *(f"{m}{e['selection']['top_percent']:g}" for m in e["selection"]["methods"])}
    for label in labels:
        wc = W(dataset="tiny-evol_instruct-tiny_inst", generator="t_greedy", selection=label)
        method = plan.selection_settings(label)["method"]
        expected = ([paths.scores(wc.dataset, wc.generator, e["scoring_model"], e["selection"]["convention"])]
                    if method in SCORED_SELECTION_METHODS else [])
        assert inputs.selection_scores(cfg, plan, wc) == expected, label


def test_previous_round_chains_the_rounds(studies):
    cfg, plan = studies
    wc = dict(seedset="tiny", evolver="tiny_base", scenario="evol_instruct")
    assert inputs.previous_round(cfg, plan, W(k="1", **wc)) == paths.instructions("tiny")
    assert inputs.previous_round(cfg, plan, W(k="3", **wc)) == paths.evolved_round("tiny", "tiny_base",
                                                                                   "evol_instruct", 2)
    info = inputs.evolver_round_info(cfg, plan, W(**wc))
    assert [r["round"] for r in info] == list(range(1, cfg["evolver"]["scenarios"]["evol_instruct"]["rounds"] + 1))
    assert inputs.evolver_round_files(cfg, plan, W(**wc)) == [
        paths.evolved_round("tiny", "tiny_base", "evol_instruct", r["round"]) for r in info]


def test_answered_evolvers_need_min_valid_rows(studies):
    cfg, plan = studies
    n = cfg["evolver"]["min_valid"]
    rows = {"tiny_inst": n, "tiny_base": n - 1}
    seen = []

    def pool_rows(seedset, scenario, evolver):
        seen.append((seedset, scenario, evolver))
        return rows[evolver]

    wc = W(seedset="tiny", scenario="evol_instruct")
    assert inputs.answered_evolvers(cfg, plan, wc, pool_rows=pool_rows) == ["tiny_inst"]
    assert seen == [("tiny", "evol_instruct", ev) for ev in ("tiny_inst", "tiny_base")]
    assert inputs.answered_sets(cfg, plan, wc, pool_rows=pool_rows) == [
        paths.evolver_file("tiny", "tiny_inst", "evol_instruct", "answered.parquet")]
    assert inputs.answered_drops(cfg, plan, wc, pool_rows=pool_rows) == [
        paths.evolver_file("tiny", "tiny_inst", "evol_instruct", "answered.drops.json")]
    assert len(inputs.pool_summaries(cfg, plan, wc)) == 2  # every evolver's pool, answered or not
    assert inputs.pool_responses(cfg, plan, W(seedset="tiny", scenario="evol_instruct", evolver="tiny_base")) == \
        paths.responses(pool_name("tiny", "evol_instruct", "tiny_base"), cfg["evolver"]["teacher"])


def test_only_ranked_evolvers_reach_training_and_tables(studies_all_curves):
    cfg, plan = studies_all_curves
    dropped = evolved_name("tiny", "evol_instruct", "tiny_base")
    assert inputs.evolved_stats(cfg, plan, W(), ranked=_all) == [
        paths.stats(evolved_name("tiny", "evol_instruct", ev)) for ev in ("tiny_inst", "tiny_base")]
    assert inputs.evolved_stats(cfg, plan, W(), ranked=_inst_only) == [
        paths.stats(evolved_name("tiny", "evol_instruct", "tiny_inst"))]
    for fn in (inputs.summary_run_evals, inputs.evolver_comparison_evals, inputs.evolved_run_figures):
        every, ranked = fn(cfg, plan, W(), ranked=_all), fn(cfg, plan, W(), ranked=_inst_only)
        assert any(dropped in f for f in every), fn.__name__
        assert ranked and not any(dropped in f for f in ranked), fn.__name__
        assert set(ranked) < set(every), fn.__name__
    # selection runs only on evolver.selection.evolvers' sets (tiny_inst): kept while it is ranked
    assert cfg["evolver"]["selection"]["evolvers"] == ["tiny_inst"]
    for fn in (inputs.evolver_selection_evals, inputs.evolver_selection_trainsets):
        assert fn(cfg, plan, W(), ranked=_inst_only) == fn(cfg, plan, W(), ranked=_all) != []
        assert fn(cfg, plan, W(), ranked=lambda seedset, scenario: []) == []
    # the tables' params stay aligned with their inputs
    runs = inputs.evolver_selection_runs(cfg, plan, W(), ranked=_inst_only)
    assert inputs.evolver_selection_trainsets(cfg, plan, W(), ranked=_inst_only) == [
        paths.trainset(r["dataset"], r["generator"], r["selection"]) for r in runs]
    assert len(inputs.evolver_selection_evals(cfg, plan, W(), ranked=_inst_only)) == len(runs)
    tables = inputs.ifs_tables_input(cfg, plan, W(), ranked=_inst_only)
    assert len({len(v) for k, v in tables.items() if k != "model_scores"}) == 1
    assert not any(dropped in f for v in tables.values() for f in v)


def test_final_outputs_and_evolved_run_figures_make_every_target(studies_all_curves):
    """rule all = targets known before the checkpoints + the evolved runs' IFS figures."""
    cfg, plan = studies_all_curves
    before = inputs.final_outputs(plan)
    figures = inputs.evolved_run_figures(cfg, plan, W(), ranked=_all)
    assert figures and not set(before) & set(figures)
    assert sorted(before + figures) == sorted(plan.final_outputs(ranked=None))


def test_tone_pairs_sources(repo_root, studies):
    cfg, plan = studies
    a = cfg["ifs"]["pairs"]["answers"]
    assert inputs.tone_pairs(cfg, plan, W(), ranked=_all) == [paths.responses("tiny", "t_greedy"),
                                                              paths.generations(a["seedset"], a["generator"])]

    def default(c):
        c["ifs"]["pairs"] = {"generator": None, "answers": {"seedset": "tiny", "generator": "t_fewshot"}}

    cfg, plan = _config(repo_root, "tests/configs/tiny.yaml", "tests/configs/tiny_studies.yaml", edit=default)
    files = inputs.tone_pairs(cfg, plan, W(), ranked=_inst_only)
    assert files[-1] == paths.generations("tiny", "t_fewshot")
    assert files[:-1] == sorted({paths.responses(r.dataset, r.generator) for r in plan.trained_runs(_inst_only)})
    assert paths.responses(evolved_name("tiny", "evol_instruct", "tiny_inst"), "t_greedy") in files
    assert not any("tiny_base" in f for f in files)


@pytest.mark.parametrize("which", ["teacher", "evolver"])
def test_selected_checkpoint_only_for_runs_with_an_ifs_curve(repo_root, which):
    def edit(c):
        c["eval"]["checkpoints"] = "final_and_selected"
        c["ifs"]["runs"] = which

    cfg, plan = _config(repo_root, "tests/configs/tiny.yaml", "tests/configs/tiny_studies.yaml", edit=edit)
    evolved = set(plan.evolved_datasets())
    for run in plan.runs:
        wc = W(dataset=run.dataset, generator=run.generator, selection=run.selection, base=run.base)
        curve = (run.dataset in evolved) == (which == "evolver")
        assert inputs.selected_checkpoint_input(cfg, plan, wc) == (
            [paths.ifs_checkpoint(run.path, ".selected.json")] if curve else [])
        assert inputs.run_eval_settings(cfg, plan, wc)["checkpoints"] == (
            "final_and_selected" if curve else "final")
        assert cfg["eval"]["checkpoints"] == "final_and_selected"  # the config itself is not changed


def test_teacher_winrates_align_with_their_runs(studies, paper):
    for cfg, plan in (studies, paper):
        t = cfg["teacher"]
        runs = inputs.teacher_winrate_runs(cfg, plan, W())
        files = inputs.teacher_winrates(cfg, plan, W())
        assert len(runs) == len(files) == len(plan.winrate_benchmarks()) * len(t["generators"]) * len(t["bases"])
        for r, f in zip(runs, files):
            lc = t["winrate"]["benchmarks"][r["benchmark"]]["length_controlled"]
            suffix = ".alpaca_eval.json" if lc == "alpaca_eval" else ".json"
            assert f == paths.winrate(r["benchmark"], paths.run_stem(t["instructions"], r["generator"], "full",
                                                                     r["base"]), suffix)
    assert any(f.endswith(".alpaca_eval.json") for f in inputs.teacher_winrates(*paper, W()))
    assert inputs.teacher_scores(*studies, W()) == [
        paths.scores("tiny", k["generator"], k["scorer"], k["convention"]) for k in studies[1].teacher_score_keys()]


def test_winrate_sources(studies, paper):
    cfg, plan = studies
    wc = W(benchmark="heldout")
    assert inputs.winrate_instructions(cfg, plan, wc) == paths.instructions("tiny")
    assert inputs.winrate_reference(cfg, plan, wc) == paths.responses("tiny", "t_greedy")
    assert inputs.winrate_judge_settings(cfg, plan, wc)["reference_name"] == "t_greedy"
    cfg, plan = paper
    wc = W(benchmark="arena_hard", part="reference")
    assert inputs.winrate_reference(cfg, plan, wc) == paths.winrate_data("arena_hard", "reference")
    assert inputs.winrate_hub_source(cfg, plan, wc)["file"].endswith("gpt-4-0314.jsonl")
    assert inputs.winrate_judge_settings(cfg, plan, wc)["reference_name"] == "gpt-4-0314"


def test_sources_are_the_configured_path_or_the_download(repo_root):
    def hub(c):
        c["seedsets"]["tiny"] = {"hf_dataset": "org/seeds"}
        c["generators"]["t_data"]["dataset"] = {"hf_dataset": "org/answers"}
        c["select_data"]["tiny_sel"] = {"hf_dataset": "org/pairs", "student": "tiny_base"}

    for edit in (None, hub):
        cfg, plan = _config(repo_root, "tests/configs/tiny.yaml", "tests/configs/tiny_recommend.yaml", edit=edit)
        got = (inputs.seedset_file(cfg, plan, W(seedset="tiny")),
               inputs.dataset_generator_source(cfg, plan, W(generator="t_data")),
               inputs.select_data_source(cfg, plan, W(name="tiny_sel")))
        if edit is None:
            assert got == ("tests/data/tiny_seeds.jsonl", "tests/data/tiny_dataset_responses.jsonl",
                           "tests/data/tiny_select.jsonl")
        else:
            assert got == (paths.downloaded_seeds("tiny"), paths.downloaded_generator("t_data"),
                           paths.downloaded_select_data("tiny_sel"))


def test_ranking_inputs(repo_root):
    cfg, plan = _config(repo_root, "tests/configs/tiny.yaml", "tests/configs/tiny_recommend.yaml")
    assert inputs.ranking_join_generators(cfg, plan, W()) == ["t_data"]
    assert inputs.ranking_join_reports(cfg, plan, W()) == [paths.join_report("tiny", "t_data")]
    sources = inputs.ranking_sources(cfg, plan, W())
    assert list(sources) == cfg["teacher"]["generators"]
    assert sources["t_greedy"] == "model tiny_inst" and sources["t_data"].startswith("dataset ")
    assert inputs.ranking_measured(cfg, plan, W()) == []  # the study is off: no SFT in the DAG

    def measured(c):
        c["teacher"]["ranking"]["measured"] = True

    cfg, plan = _config(repo_root, "tests/configs/tiny.yaml", "tests/configs/tiny_recommend.yaml", edit=measured)
    assert inputs.ranking_measured(cfg, plan, W()) == [paths.table("teacher_performance")]
    entry = cfg["select_data"]["tiny_sel"]
    assert inputs.select_data_fields(cfg, plan, W(name="tiny_sel")) == {k: entry[k] for k in inputs.SELECT_DATA_FIELDS}
    assert inputs.select_data_student_dir(cfg, plan, W(name="tiny_sel")) == paths.model("tiny_base")


def test_rule_files_bind_every_input_function_under_its_name(repo_root):
    """Each binding in rules/*.smk is ``name = input_function(inputs.name, ...)``, and every input
    function of the module (config, plan, wildcards) is bound, so none is dead or renamed."""
    text = "\n".join(p.read_text() for p in sorted((repo_root / "rules").glob("*.smk")))
    bound = re.findall(r"^(\w+) = input_function\(\s*inputs\.(\w+)\b", text, flags=re.M)
    assert bound and all(a == b for a, b in bound), [(a, b) for a, b in bound if a != b]
    functions = {n for n, f in vars(inputs).items() if inspect.isfunction(f) and f.__module__ == inputs.__name__
                 and list(inspect.signature(f).parameters)[:3] == ["config", "plan", "wildcards"]}
    assert functions == {b for _, b in bound}, functions ^ {b for _, b in bound}


def test_inputs_import_without_torch():
    code = "import teachfit.workflow.inputs, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_library_never_imports_the_workflow(repo_root):
    pkg = repo_root / "src" / "teachfit"
    offenders = []
    for path in pkg.rglob("*.py"):
        if (pkg / "workflow") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(pkg)}: {n}" for n in names if n.startswith("teachfit.workflow")]
    assert not offenders, offenders
