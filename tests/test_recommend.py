"""Issue 14: recommending a teacher and selecting data without fine-tuning.

The functions the rules run (``import_responses``, ``rank_teachers``, ``prepare_select_data``,
``select_data``) are called as the rules call them, on small tables written here; the dry runs
prove which jobs the ``rank_teachers`` target holds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from workflow_utils import ROOT, copy_workflow, dry_run

from teachfit.workflow import plan
from teachfit.schema import ConfigError, defaults, load_yaml
from teachfit.workflow.config import validate_config
from teachfit.generation.dataset import import_responses
from teachfit.generation.responses import select_responses
from teachfit.io import DataError, read_json, write_parquet
from teachfit.pairs import read_pairs
from teachfit.studies.recommend import (
    RANKING_METRICS,
    prepare_select_data,
    rank_teachers,
    rank_values,
    select_data,
)
from teachfit.seeds import prepare_seeds

SOURCE = defaults("generators.*", kind="dataset", dataset={"path": "x.jsonl"})["dataset"]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def conv(q: str, a: str, system: str | None = None) -> dict:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def source(**kw) -> dict:
    return {**SOURCE, **kw}


# --------------------------------------------------------------------------- reading user data


def test_read_pairs_alpaca_rows_combine_input_like_seed_sets(tmp_path):
    f = jsonl(tmp_path / "a.jsonl", [
        {"instruction": " Summarize. ", "input": "The cat sat.", "output": "A cat sat."},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        {"instruction": "Name a color.", "output": ""},
        {"instruction": "  ", "output": "orphan answer"},
    ])
    df = read_pairs(f, source())
    assert df["instruction"].to_list() == ["Summarize.\n\nThe cat sat.", "Say hi.", "Name a color.", None]
    assert df["response"].to_list() == ["A cat sat.", "Hi!", "", "orphan answer"]
    assert df["status"].to_list() == ["ok", "ok", "empty_response", "empty_instruction"]
    assert df["source_index"].to_list() == [0, 1, 2, 3]


def test_read_pairs_messages_statuses(tmp_path):
    f = jsonl(tmp_path / "m.jsonl", [
        conv("Q1", "A1", system="Be brief."),
        {"messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"},
                      {"role": "user", "content": "more?"}, {"role": "assistant", "content": "no"}]},
        {"messages": [{"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "ok"}]},
        {"messages": [{"role": "user", "content": "Q4"}, {"role": "tool", "content": "x"},
                      {"role": "assistant", "content": "A4"}]},
        {"messages": [{"role": "user", "content": "Q5"}]},
        {"messages": None},
    ])
    df = read_pairs(f, source())
    assert df["status"].to_list() == ["ok", "multi_turn", "incomplete_conversation", "unsupported_role",
                                      "incomplete_conversation", "incomplete_conversation"]
    assert df.row(0, named=True) | {"source_index": 0} == {
        "source_index": 0, "source_id": None, "instruction": "Q1", "response": "A1", "system": "Be brief.",
        "status": "ok"}


@pytest.mark.parametrize(("rows", "entry", "message"), [
    ([], {}, "the data set is empty"),
    ([{"prompt": "q", "output": "a"}], {}, "no record has the instruction field 'instruction'"),
    ([{"instruction": "q", "output": "a"}], {"response_field": "answer"},
     ("no record has the response field 'answer' (config key response_field, CLI --response-field); "
      "fields in the file: instruction, output")),
    ([{"instruction": "q", "answer": "a"}], {}, "no response field: none of ['response', 'output', 'completion']"),
    ([{"messages": [{"from": "human", "value": "q"}]}], {}, "messages[0] must have 'role' and 'content'"),
    ([{"instruction": "q", "output": 3}], {}, "record 0: field 'output' must be a string, got int"),
    ([{"messages": "q"}], {}, "field 'messages' must be a list"),
    ([{"instruction": "q", "output": "a"}], {"format": "messages"}, "no record has the messages field"),
])
def test_read_pairs_errors_name_file_record_and_field(tmp_path, rows, entry, message):
    f = jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:
        read_pairs(f, source(**entry))
    assert message in str(err.value)
    assert str(f) in str(err.value)


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file does not exist"):
        read_pairs(tmp_path / "nope.jsonl", source())


# --------------------------------------------------------------------------- dataset generator kind


@pytest.fixture()
def study(tmp_path) -> Path:
    """A study instruction table made by the seed rule (the ids a join by id uses)."""
    seeds = jsonl(tmp_path / "seeds.jsonl", [{"instruction": q} for q in
                                            ["What is 2+2?", "Name a fruit.", "Say hello.", "Count to three."]])
    out = tmp_path / "instructions.parquet"
    prepare_seeds(seeds, out, defaults("seedsets.*", path=str(seeds)), "s")
    return out


def test_import_responses_joins_by_text_and_counts_every_row(study, tmp_path, caplog):
    data = jsonl(tmp_path / "d.jsonl", [
        conv("  What is 2+2?  ", "4."),             # whitespace around the text: the seed loader strips it too
        conv("Name a fruit.", "A pear."),
        conv("Name a fruit.", "An apple."),         # duplicate: the first row is kept
        conv("Name a vegetable.", "A leek."),       # matches no study instruction
        conv("Say hello.", ""),                     # unusable: empty response
        {"messages": [{"role": "user", "content": "Count to three."}]},  # unusable: no answer
    ])
    gens, report = tmp_path / "g.parquet", tmp_path / "g.join.json"
    with caplog.at_level("INFO"):
        out = import_responses(study, data, gens, report, "mine", source(path=str(data)))
    assert out["instruction"].to_list() == ["What is 2+2?", "Name a fruit."]
    assert out["response"].to_list() == ["4.", "A pear."]
    assert out["response_source_index"].to_list() == [0, 1]
    rep = read_json(report)
    assert {k: rep[k] for k in ("rows", "matched", "unmatched", "duplicate", "unusable_rows", "instructions",
                                "missing")} == {"rows": 6, "matched": 2, "unmatched": 1, "duplicate": 1,
                                                "unusable_rows": 2, "instructions": 4, "missing": 2}
    assert rep["unusable"]["empty_response"] == 1 and rep["unusable"]["incomplete_conversation"] == 1
    assert rep["unmatched_examples"] == ["Name a vegetable."]
    assert "2 missing; 1 rows unmatched, 1 duplicate, 2 unusable" in caplog.text
    # the generations table goes through the model generators' next rule unchanged
    rewards = tmp_path / "r.parquet"
    write_parquet(out.select("id", "sample_idx").with_columns(pl.lit(3.0).alias("reward")), rewards)
    kept = select_responses(gens, rewards, tmp_path / "resp.parquet", select="first")
    assert kept.height == 2 and kept["generator"].unique().to_list() == ["mine"]


def test_import_responses_by_id_and_duplicates_error(study, tmp_path):
    ids = pl.read_parquet(study)["id"].to_list()
    data = jsonl(tmp_path / "d.jsonl", [
        {"id": ids[2], "instruction": "anything", "response": "Hello!"},
        {"id": ids[0], "instruction": "text ignored by join: id", "response": "4"},
        {"id": "zzz", "instruction": "q", "response": "a"},
    ])
    out = import_responses(study, data, tmp_path / "g.parquet", tmp_path / "j.json", "byid",
                           source(path=str(data), join="id"))
    assert out["id"].to_list() == [ids[0], ids[2]]  # study order
    assert out["response"].to_list() == ["4", "Hello!"]
    assert read_json(tmp_path / "j.json")["unmatched"] == 1
    dup = jsonl(tmp_path / "dup.jsonl", [conv("Say hello.", "Hi"), conv("Say hello.", "Hey")])
    with pytest.raises(DataError, match=r"1 duplicate row\(s\) for one instruction \(records \[0, 1\]\)"):
        import_responses(study, dup, tmp_path / "g2.parquet", tmp_path / "j2.json", "d",
                         source(path=str(dup), duplicates="error"))
    none = jsonl(tmp_path / "none.jsonl", [conv("Unrelated?", "Yes.")])
    with pytest.raises(DataError, match="none of its 1 usable rows matches an instruction"):
        import_responses(study, none, tmp_path / "g3.parquet", tmp_path / "j3.json", "d", source(path=str(none)))


# --------------------------------------------------------------------------- config and plan


TINY = load_yaml(ROOT / "tests" / "configs" / "tiny.yaml")


def tiny_config(**overlay) -> dict:
    from teachfit.workflow.cli import merge

    return merge(load_yaml(ROOT / "config" / "config.yaml"), merge(TINY, overlay))


@pytest.mark.parametrize(("generator", "message"), [
    ({"kind": "dataset", "model": "tiny_inst", "dataset": {"path": "d.jsonl"}}, "remove 'model'"),
    ({"kind": "dataset", "n": 2, "dataset": {"path": "d.jsonl"}}, "n must be 1 and select 'first'"),
    ({"kind": "dataset"}, "config.generators.g: 'dataset' is a required property"),
    ({"kind": "dataset", "dataset": {"path": "d.jsonl", "hf_dataset": "x/y"}}, "set exactly one of"),
    ({"kind": "dataset", "dataset": {"path": "d.jsonl", "join": "fuzzy"}}, "'fuzzy' is not allowed"),
    ({"temperature": 0.5}, "config.generators.g: 'model' is a required property"),
])
def test_dataset_generator_config_errors(generator, message):
    with pytest.raises(ConfigError) as err:
        validate_config(tiny_config(generators={"g": generator}))
    assert message in str(err.value)


def test_evolver_teacher_must_be_a_model_and_select_data_student_must_exist():
    studies = load_yaml(ROOT / "tests" / "configs" / "tiny_studies.yaml")
    studies["evolver"]["teacher"] = "g"
    cfg = tiny_config(generators={"g": {"kind": "dataset", "dataset": {"path": "d.jsonl"}}}, **studies)
    with pytest.raises(ConfigError, match="evolver.teacher: generator 'g' is a dataset generator"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="select_data.x.student: unknown model 'gpt9'"):
        validate_config(tiny_config(select_data={"x": {"path": "d.jsonl", "student": "gpt9"}}))


def test_plan_generators_ranking_and_selection_outputs():
    cfg = validate_config(tiny_config(
        generators={"t_data": {"kind": "dataset", "dataset": {"path": "d.jsonl"}}},
        teacher={"generators": ["t_greedy", "t_data"]},
        select_data={"mine": {"path": "m.jsonl", "student": "tiny_base"}}))
    p = plan.build_plan(cfg)
    assert "t_data" in p.names["dataset_generators"] and "t_data" not in p.names["model_generators"]
    assert p.ranking_measured() is True  # null = teacher.activate
    outs = p.final_outputs()
    assert {"results/tables/teacher_ranking.csv", "results/select_data/mine/selected.jsonl",
            "results/tables/select_data_mine.csv"} <= set(outs)
    cfg["teacher"]["ranking"]["measured"] = False
    assert plan.build_plan(cfg).ranking_measured() is False
    off = validate_config(tiny_config(teacher={"activate": False}))  # the teacher section stays unused
    assert "results/tables/teacher_ranking.csv" not in plan.build_plan(off).final_outputs()
    rank_only = validate_config(tiny_config(teacher={"activate": False, "ranking": {"activate": True}}))
    p = plan.build_plan(rank_only)
    assert p.ranking_measured() is False and p.reward_model("tiny") == "tiny_inst"
    assert "results/tables/teacher_ranking.csv" in p.final_outputs()
    assert "results/tables/teacher_performance.csv" not in p.final_outputs()


# --------------------------------------------------------------------------- ranking


def test_rank_values_ties_directions_nan():
    assert rank_values([0.5, 0.7, 0.7, float("nan")], "higher") == [3, 1, 1, None]
    assert rank_values([0.5, 0.7, 0.7, None], "lower") == [1, 2, 2, None]
    with pytest.raises(ValueError, match="direction"):
        rank_values([1.0], "up")


METRICS = pl.DataFrame({
    "generator": ["g1", "g2", "g3", "mine"],
    "base": ["b"] * 4,
    "n": [8, 8, 8, 6],
    "reward": [3.0, 4.0, 2.0, 3.5],
    "length": [40.0, 20.0, 60.0, 30.0],
    "ppl_base": [5.0, 9.0, 3.0, 4.0],
    "ifd_base": [0.8, 0.9, 0.5, 0.7],
    "ppl_ref": [2.0, 2.5, 3.0, 1.5],
    "ifd_ref": [0.4, 0.6, 0.5, 0.3],
    "car": [0.60, 0.55, 0.70, 0.65],
    "rsr_base": [2.0, 1.0, 1.5, 3.0],
})


def _rank(tmp_path: Path, performance: pl.DataFrame | None = None, metrics: pl.DataFrame = METRICS):
    dm = tmp_path / "dm.csv"
    metrics.write_csv(dm)
    join = tmp_path / "mine.join.json"
    join.write_text(json.dumps({"rows": 10, "unmatched": 2, "duplicate": 1, "unusable_rows": 1, "missing": 2}))
    measured = []
    if performance is not None:
        measured = [str(tmp_path / "perf.csv")]
        performance.write_csv(measured[0])
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("table", "csv"), ("figure", "png"), ("verdict", "rst"))}
    df = rank_teachers(dm, [str(join)], measured, out["table"], out["figure"], out["verdict"],
                       generators=["g1", "g2", "g3", "mine"],
                       sources={"g1": "model a", "g2": "model b", "g3": "model c", "mine": "dataset d.jsonl"},
                       join_generators=["mine"], style=defaults("analysis.figures", formats=["png"]),
                       bootstrap=defaults("teacher.ranking.bootstrap", n=100))
    return df, out


def test_rank_teachers_ranks_every_metric_per_base(tmp_path):
    df, out = _rank(tmp_path)
    assert df["generator"].to_list() == ["g3", "mine", "g1", "g2"]  # by CAR, highest first
    ranks = {r["generator"]: r for r in df.to_dicts()}
    assert [ranks[g]["reward_rank"] for g in ("g1", "g2", "g3", "mine")] == [3, 1, 4, 2]
    assert [ranks[g]["ppl_base_rank"] for g in ("g1", "g2", "g3", "mine")] == [3, 4, 1, 2]  # lowest first
    assert ranks["mine"]["rows_read"] == 10 and ranks["mine"]["missing_instructions"] == 2
    assert ranks["g1"]["rows_read"] is None and ranks["g1"]["unmatched_rows"] == 0
    assert "performance" not in df.columns
    assert pl.read_csv(out["table"]).columns == df.columns
    assert out["figure"].stat().st_size > 5000
    verdict = out["verdict"].read_text()
    assert verdict.startswith("**Student** ``b`` (4 candidate teachers). CAR ranks ``g3`` first (CAR 0.7; "
                              "next ``mine``, 0.65).")
    assert "reward (highest) ``g2``" in verdict and "PPL under the student (lowest) ``g3``" in verdict
    assert "Data set ``mine`` (dataset d.jsonl) answered 6 of 8 instructions (10 rows read: 2 unmatched, " \
           "1 duplicate, 1 unusable)" in verdict
    assert "--measured" in verdict


def test_rank_teachers_rho_is_the_signed_spearman_of_the_correlation_table(tmp_path):
    """The predicted-vs-measured rho per metric equals the teacher study's Spearman rho between
    the metric and performance (teacher_metric_correlations.csv), sign-flipped for lower-first metrics."""
    from teachfit.correlate import correlation_table

    perf = pl.DataFrame({"base": ["b"] * 4, "generator": ["g1", "g2", "g3", "mine"],
                         "performance": [0.30, 0.50, 0.10, 0.20]})
    df, out = _rank(tmp_path, perf)
    corr = correlation_table(METRICS.join(perf, on=["base", "generator"]), group_col="base",
                             x_cols=list(RANKING_METRICS), y_col="performance")
    for m, (direction, _) in RANKING_METRICS.items():
        expected = corr.filter(pl.col("base") == "b")[f"{m}_spearman"][0]
        expected = expected if direction == "higher" else -expected
        assert df[f"{m}_rho"].unique().to_list() == [pytest.approx(expected)], m
    assert df["car_rho"][0] == pytest.approx(-1.0)  # CAR: g3 > mine > g1 > g2; measured: g2 > g1 > mine > g3
    assert df["reward_rho"][0] == pytest.approx(0.8) and df["ifd_base_rho"][0] == pytest.approx(1.0)
    assert df["performance_rank"].to_list() == [4, 3, 2, 1]
    verdict = out["verdict"].read_text()
    assert "``g2`` performed best (performance 0.5)" in verdict
    assert "Spearman rho = -1 with the measured ranking over 4 teachers, and CAR would not have chosen" in verdict
    assert "closest to the measured ranking was IFD under the student (rho = 1, 95% bootstrap interval" in verdict


def test_rank_teachers_errors(tmp_path):
    with pytest.raises(DataError, match="do not match teacher.generators"):
        _rank(tmp_path, metrics=METRICS.filter(pl.col("generator") != "g2"))
    with pytest.raises(DataError, match="no performance of base 'b' for \\['mine'\\]"):
        _rank(tmp_path, pl.DataFrame({"base": ["b"] * 3, "generator": ["g1", "g2", "g3"],
                                      "performance": [0.1, 0.2, 0.3]}))


# --------------------------------------------------------------------------- data selection


@pytest.fixture()
def user_data(tmp_path) -> Path:
    return jsonl(tmp_path / "user.jsonl", [
        {"instruction": "q0", "output": "a0"},
        {"instruction": "q1", "output": "a1"},
        {"instruction": "q2", "output": "a2"},
        {"instruction": "q3", "output": "a3"},
        {"instruction": "q1", "output": "a1"},  # exact duplicate of record 1
        {"instruction": "q5", "output": ""},    # empty response
        {"instruction": "q6", "output": "a6"},  # its losses are NaN below (truncated away)
    ])


def _scores(pairs: Path, path: Path, losses: dict[str, tuple[float, float, float]]) -> Path:
    """A scores table as rule score_losses writes it: L(Q), L(A|Q), L(A) per pair (nats)."""
    df = pl.read_parquet(pairs)
    rows = [{"id": i, "loss_q": losses[q][0], "loss_a_given_q": losses[q][1], "loss_a": losses[q][2],
             "n_a_tokens": 3, "n_instruction_tokens": 2, "truncated": False}
            for i, q in zip(df["id"], df["instruction"])]
    write_parquet(pl.DataFrame(rows), path)
    return path


# IFD = L(A|Q)/L(A): q0 1.8, q1 0.9, q2 0.8, q3 0.3 (the ids-a-d case of issue 11); IC-IFD = IFD / L(Q)
LOSSES = {"q0": (1.0, 1.8, 1.0), "q1": (3.0, 0.9, 1.0), "q2": (1.0, 0.8, 1.0), "q3": (0.5, 0.3, 1.0),
          "q6": (1.0, float("nan"), float("nan"))}


def _select(tmp_path: Path, user_data: Path, metric: str, top_percent: float = 50.0):
    pairs, rejected = tmp_path / "pairs.parquet", tmp_path / "rejected.parquet"
    prepare_select_data(user_data, pairs, rejected, "mine", source())
    scores = _scores(pairs, tmp_path / "scores.parquet", LOSSES)
    out = {k: tmp_path / f"{metric}_{k}" for k in ("selected.jsonl", "decisions.csv", "summary.csv")}
    table = select_data(pairs, rejected, scores, out["selected.jsonl"], out["decisions.csv"], out["summary.csv"],
                        name="mine", selection={"metric": metric, "top_percent": top_percent})
    return table, out


def _summary(path: Path) -> dict[str, int]:
    return {r["reason"]: r["rows"] for r in pl.read_csv(path).to_dicts() if r["rows"]}


@pytest.mark.parametrize(("metric", "kept"), [
    ("icifd", ["q0", "q2"]),   # IC-IFD = IFD / L(Q): 1.8, 0.3, 0.8, 0.6 -> q0, q2 (top 2 of the 4 scored)
    ("loss", ["q3", "q2"]),    # lowest L(A|Q) first
])
def test_select_data_keeps_top_k_and_accounts_for_every_record(tmp_path, user_data, metric, kept):
    table, out = _select(tmp_path, user_data, metric)
    lines = [json.loads(x) for x in out["selected.jsonl"].read_text().splitlines()]
    assert [m["messages"][0]["content"] for m in lines] == kept
    assert lines[0]["messages"][1]["role"] == "assistant"
    assert table["source_index"].to_list() == list(range(7))
    assert _summary(out["summary.csv"]) == {"kept": 2, "below_top_k": 2, "no_score": 1, "duplicate": 1,
                                            "empty_response": 1, "total": 7}
    assert table.filter(pl.col("kept")).sort("rank")["instruction"].to_list() == kept
    assert table.filter(pl.col("kept")).sort("rank")["rank"].to_list() == [1, 2]


def test_select_data_by_ifd_goes_through_select_top(tmp_path, user_data):
    """IFD ranking and its filter belong to training.selection.select_top (Cherry_LLM's IFD > 1
    drop, issue 11): the row it leaves out is counted as filtered by it, not as below the cut;
    50% applies to the 3 rows left (k = ceil(1.5) = 2)."""
    table, out = _select(tmp_path, user_data, "ifd")
    assert [json.loads(x)["messages"][0]["content"] for x in out["selected.jsonl"].read_text().splitlines()] \
        == ["q1", "q2"]  # q0 (IFD 1.8) filtered; then highest IFD first: q1 0.9, q2 0.8
    assert _summary(out["summary.csv"])["filtered_by_select_top"] == 1
    assert table.filter(pl.col("reason") == "filtered_by_select_top")["instruction"].to_list() == ["q0"]


def test_prepare_select_data_rejects_nothing_silently(tmp_path):
    f = jsonl(tmp_path / "u.jsonl", [conv("Q", "A", system="S"), conv("Q", "A", system="S"), conv("Q", "A"),
                                     {"messages": [{"role": "user", "content": "x"}]}])
    pairs = prepare_select_data(f, tmp_path / "p.parquet", tmp_path / "r.parquet", "u", source())
    assert pairs["system"].to_list() == ["S", None]  # a different system turn is a different pair
    rejected = pl.read_parquet(tmp_path / "r.parquet")
    assert rejected.select("source_index", "reason").rows() == [(1, "duplicate"), (3, "incomplete_conversation")]
    empty = jsonl(tmp_path / "e.jsonl", [{"instruction": "q", "output": " "}])
    with pytest.raises(DataError, match="no usable"):
        prepare_select_data(empty, tmp_path / "p2.parquet", tmp_path / "r2.parquet", "u", source())


def test_selected_jsonl_trains_with_trl_sfttrainer(tmp_path, user_data, tiny_llama):
    """The selected file is what trl's SFTTrainer takes: loaded with datasets' json loader,
    tokenized with the model's chat template, one optimizer step."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from teachfit.training.sft import make_sft_config

    _, out = _select(tmp_path, user_data, "icifd", top_percent=100)
    ds = load_dataset("json", data_files=str(out["selected.jsonl"]), split="train")
    assert ds.column_names == ["messages"] and len(ds) == 4
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = tok.pad_token or tok.eos_token
    args = make_sft_config(defaults("sft", max_steps=1, per_device_train_batch_size=2, max_length=64),
                           tmp_path / "sft")
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_llama), args=args, train_dataset=ds,
                         processing_class=tok)
    assert len(trainer.train_dataset) == 4 and "input_ids" in trainer.train_dataset.column_names
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)


# --------------------------------------------------------------------------- DAG: no fine-tuning


SFT_OR_EVAL = {"select_trainset", "train_sft", "evaluate_checkpoints", "evaluate_model", "answer_winrate",
               "judge_winrate", "build_teacher_performance", "summarize_evals"}


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def test_rank_teachers_dag_has_no_sft_or_evaluation(wf):
    jobs = dry_run(wf, "--configfile", "tests/configs/tiny.yaml", "tests/configs/tiny_recommend.yaml",
                   "--", "rank_teachers")
    assert jobs["rank_teachers"] == 1 and jobs["import_responses"] == 1
    # 4 candidates x (student + reference model) x (CAR's chat + the IFD cherry convention)
    assert jobs["generate_responses"] == 3 and jobs["score_rewards"] == 4 and jobs["score_losses"] == 16
    assert not SFT_OR_EVAL & set(jobs), jobs


def test_rank_teachers_measured_adds_the_full_study(wf, tmp_path):
    over = tmp_path / "measured.yaml"
    over.write_text("teacher: {ranking: {measured: true}}\n")
    jobs = dry_run(wf, "--configfile", "tests/configs/tiny.yaml", "tests/configs/tiny_recommend.yaml", str(over),
                   "--", "rank_teachers")
    assert jobs["train_sft"] == 4 and jobs["build_teacher_performance"] == 1


def test_rank_teachers_on_the_default_config_has_no_sft(wf, tmp_path):
    """The default config runs the full study (teacher.activate), but rank_teachers with
    measured: false (what `teachfit rank-teachers` writes) needs generation and scoring only."""
    over = tmp_path / "rank.yaml"
    over.write_text("teacher: {ranking: {measured: false}}\n")
    jobs = dry_run(wf, "--configfile", str(over), "--", "rank_teachers")
    assert jobs["generate_responses"] == 4 and jobs["rank_teachers"] == 1
    assert not SFT_OR_EVAL & set(jobs), jobs
