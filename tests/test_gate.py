"""The validity gate on evolved instructions (teachfit.studies.evolver.gate, .gate_checks), its judge
(.gate_judge), its precision and recall on the project's labelled set (.gate_quality), and the
study's pool / rank / equalize / tables steps around it (teachfit.studies.evolver.sets, .tables)."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from teachfit.io import DataError
from teachfit.studies.evolver.evolve import build_auto_evol_prompt, build_evol_prompt
from teachfit.studies.evolver.gate import gate_instructions, gate_replies, gate_responses
from teachfit.studies.evolver.gate_checks import (
    OPTIONAL_CHECKS,
    REASONS,
    GateSettings,
    check_instruction,
    classify_failure,
    language_switch,
    response_failure,
    stem,
    strip_labels,
    task_form,
)
from teachfit.studies.evolver.gate_judge import (
    CONTENT_FREE,
    GateJudge,
    contextual_calibration,
    gain_prompt,
    request_prompt,
)
from teachfit.studies.evolver.gate_quality import gate_quality, load_gate_labels, predict_labels

DET = GateSettings.deterministic()


# ----------------------------------------------------------------------------- the failing inputs


def test_issue11_failing_input_marker_then_dots_is_empty():
    """Issue 11 item 5: ``classify_failure("Explain photosynthesis", "#Rewritten Prompt#:\\n...")`` kept
    the instruction ``...``. The kind: whatever is left after the markers is only punctuation or
    stop words (WizardLM rule 3)."""
    assert classify_failure("Explain photosynthesis", "#Rewritten Prompt#:\n...") == "empty"
    for leftover in ("...", "?!", "- - -", "the of and", "It is.", "#", "**", "### Response:", "#Instructions#:"):
        assert classify_failure("Explain photosynthesis", f"#Rewritten Prompt#:\n{leftover}") == "empty", leftover
        assert classify_failure("Explain photosynthesis", leftover) == "empty", leftover


# Issue 15's table, rewritten in the project's own words: (parent, reply, operation, reason)
ISSUE15 = [
    ("Write a limerick about a cat who loves rain.", "#", "deepen", "empty"),
    ("Explain why the sea looks blue on sunny days but grey under clouds.",
     ("Your job is to rewrite a task instruction into a harder version of itself, one that gives well-known AI "
      "assistants more trouble."), "concretize", "prompt_copy"),
    ("Write a limerick about a cat who loves rain.", "### Response:\nA cat is a cat, and rain is rain.",
     "constraints", "not_instruction"),
    ("Write a limerick about a cat who loves rain.", "The new instruction should be about a rarer topic.\n\n### Answer:",
     "breadth", "prompt_copy"),
    ("Explain why the sea looks blue on sunny days but grey under clouds.",
     "The sea looks blue on sunny days but grey under clouds.", "reasoning", "no_gain"),
    ("Write a limerick about a cat who loves rain.", "#Instructions#: Write a limerick about a cat who loves rain.",
     "deepen", "no_gain"),
    ("Give three tips for staying focused while studying at home.",
     "1. **Take short breaks**: Every 25 minutes, rest for five.\n2. **Silence your phone**: Keep it in another room.",
     "deepen", "not_instruction"),
    ("Translate the sentence into French.\n\nThe museum closes at six o'clock this evening.",
     "Le musée ferme déjà, c'est la fin de la journée légère et tranquille.", "constraints", "language"),
    ("What is the difference between a lake and a pond?", "The difference between a lake and a pond is a pond.",
     "constraints", "no_gain"),
]


@pytest.mark.parametrize(("parent", "reply", "op", "reason"), ISSUE15)
def test_issue15_rows_are_dropped_with_their_reason(parent, reply, op, reason):
    assert classify_failure(parent, reply, prompt=build_evol_prompt(parent, op)) == reason


def test_a_section_label_before_an_instruction_is_stripped_not_fatal():
    parent = "Describe how to brew a cup of green tea."
    for reply in ("#Instructions#:\nDescribe how to brew green tea for ten people with one teapot.",
                  "### Instruction:\nDescribe how to brew green tea for ten people with one teapot.",
                  "**Task:** Describe how to brew green tea for ten people with one teapot.",
                  "Step 3 #Rewritten Instruction#:\nDescribe how to brew green tea for ten people with one teapot."):
        v = check_instruction(parent, reply, prompt=build_evol_prompt(parent, "constraints"))
        assert v.reason is None and v.instruction == "Describe how to brew green tea for ten people with one teapot."
    assert strip_labels("### Response:\nA cat is a cat.") == ("A cat is a cat.", True)
    assert strip_labels("Write a poem.\n\n### Answer:") == ("Write a poem.", False)
    # a label left *inside* the text is the prompt's layout copied back
    assert classify_failure("Write a poem about rain.",
                            "#Method 1:\nAdd a constraint about the weather.\n\n#Method 2:\nAsk for a rhyme.") == \
        "prompt_copy"


# ----------------------------------------------------------------------------- one test per kind


VALID_PARENT = "Write a limerick about a cat who loves rain."


@pytest.mark.parametrize(("reply", "scenario", "reason"), [
    ("", "evol_instruct", "empty"),
    (None, "evol_instruct", "empty"),
    ("Step 1 #Methods List#:\n- more\nStep 2 #Plan#:\nmore", "auto_evol", "unparseable"),
    ("I'm sorry, but I can't rewrite this.", "evol_instruct", "refusal"),
    ("I'm sorry, but I can't rewrite this.", "auto_evol", "refusal"),
    ("Rewrite the given prompt so that it is harder.", "evol_instruct", "prompt_copy"),
    ("Write a limerick about a cat " + "who loves rain and snow " * 200, "evol_instruct", "too_long"),
    ("Escribe un limerick sobre un gato al que le encanta la lluvia y odia los truenos.", "evol_instruct", "language"),
    ("Write a limerick about a cat who loves the rain.", "evol_instruct", "no_gain"),
    ("Cats who love rain are rare, and most of them live in Scotland.", "evol_instruct", "not_instruction"),
    ("Write a limerick about a cat who loves rain but is afraid of puddles.", "evol_instruct", None),
    ("Step 4 #Finally Rewritten Instruction#:\nWrite a limerick about a cat who loves rain but fears thunder.",
     "auto_evol", None),
])
def test_each_instruction_kind(reply, scenario, reason):
    prompt = build_auto_evol_prompt(VALID_PARENT) if scenario == "auto_evol" else build_evol_prompt(VALID_PARENT,
                                                                                                   "deepen")
    assert classify_failure(VALID_PARENT, reply, scenario=scenario, prompt=prompt) == reason


def test_duplicate_is_a_property_of_the_round():
    replies = _replies(["Write a limerick about a cat who loves rain but fears thunder."] * 2
                       + ["write a limerick about a cat who loves rain, but fears thunder!"])
    kept, verdicts = gate_replies(replies, "evol_instruct", DET)
    assert verdicts["reason"].to_list() == [None, "duplicate", "duplicate"] and kept.height == 1


@pytest.mark.parametrize(("response", "reason"), [
    ("", "response_empty"),
    (None, "response_empty"),
    ("... !!", "response_empty"),
    ("It is what it is.", "response_empty"),
    ("I'm sorry, but I can't help with that.", "response_refusal"),
    ("SORRY: no idea.", "response_refusal"),
    ("Sorry " + "for the long wait, here is the plan in detail " * 10, None),  # >= 80 words: an answer
    ("Rainy days are a cat's favourite: " + "drip drop " * 10, None),
])
def test_each_response_kind(response, reason):
    assert response_failure(response) == reason
    assert response_failure(response, checks=[c for c in OPTIONAL_CHECKS if not c.startswith("response")]) is None


def test_checks_can_be_switched_off_but_the_basic_ones_always_run():
    off = GateSettings(checks=[], judge=False, threshold=0.5, version=1)
    assert classify_failure(VALID_PARENT, VALID_PARENT, settings=off) is None  # no_gain off
    assert classify_failure(VALID_PARENT, "Rewrite the given prompt.", settings=off) is None
    assert classify_failure(VALID_PARENT, "#Rewritten Instruction#:\n...", settings=off) == "empty"
    assert classify_failure(VALID_PARENT, "As an AI language model I cannot do that.", settings=off) == "refusal"
    with pytest.raises(ValueError, match="gate.checks: \\['typo'\\] not allowed"):
        GateSettings(checks=["typo"], judge=False, threshold=0.5, version=1)
    with pytest.raises(ValueError, match="gate.threshold"):
        GateSettings(checks=[], judge=False, threshold=1.5, version=1)
    with pytest.raises(ValueError, match="unknown key"):
        GateSettings.from_dict({"checks": [], "judge": False, "threshold": 0.5, "version": 1, "strict": True})


def test_task_cues():
    assert task_form("In exactly three sentences, explain why maple leaves turn red.") == "task"
    assert task_form("Given the list 4, 9, 1, sort it in descending order.") == "task"
    assert task_form("A train leaves at noon at 80 km/h. When does it reach a town 200 km away?") == "task"
    assert task_form("Could you compare two sorting algorithms for a beginner") == "task"
    assert task_form("Your task is to plan a picnic for six people.") == "task"
    assert task_form("1. Write a poem.\n2. Explain it.") == "answer"  # a list item first: an answer's shape
    assert task_form("Sure, here you go: solar, wind.") == "answer"
    assert task_form("A cat is a cat.", answer_label=True) == "answer"
    assert task_form("Photosynthesis turns light into sugar.") == "unknown"


def test_language_switch_is_robust_on_short_english():
    # langdetect alone calls the first parent Dutch (p = 0.99999) and "Add 2 and 3." Welsh
    assert not language_switch("How much sleep do teenagers need?",
                               "How much sleep do teenagers need, and how does a phone in bed change it?")
    assert not language_switch("Add 2 and 3.", "Add 2 and 3, then multiply the result by 4.")
    assert not language_switch("Translate 'good morning' into Spanish.",
                               "Translate 'Buenos días, ¿dónde está la estación de tren?' into English.")
    assert language_switch("Explain why leaves change colour in autumn.",
                           "Erkläre, warum sich die Blätter im Herbst verfärben, und nenne drei Pigmente.")
    assert language_switch("Décris ta saison préférée et explique pourquoi tu l'aimes.",
                           "Describe your favourite season in three paragraphs and explain why you like it best.")
    # a non-English instruction without an English task cue is not dropped without a judge
    assert classify_failure("Escribe una receta sencilla para hacer tortilla de patatas.",
                            "Escribe una receta de tortilla de patatas para cuatro personas sin cebolla.") is None


def test_stem_matches_inflections():
    assert stem("volcanoes") == stem("volcano") and stem("erupts") == stem("erupt")
    assert stem("describing") == stem("describes") == stem("describe") and stem("stories") == "story"
    assert stem("glass") == "glass" and stem("sea") == "sea"
    assert classify_failure("Describe how a volcano erupts.", "Describe how volcanoes erupt.") == "no_gain"


# ----------------------------------------------------------------------------- the judge


def test_contextual_calibration_maps_the_content_free_input_to_one_half():
    p = np.array([0.2, 0.6, 0.9])
    q = contextual_calibration(p, 0.6)
    assert q[1] == pytest.approx(0.5)
    assert np.all(np.diff(q) > 0)  # order kept
    # q = (p/cf) / (p/cf + (1-p)/(1-cf)), hand-computed for p = 0.9, cf = 0.6
    assert q[2] == pytest.approx((0.9 / 0.6) / (0.9 / 0.6 + 0.1 / 0.4))
    assert contextual_calibration(p, 0.5) == pytest.approx(p)


class FakeScores:
    """A judge ``score_fn``: P("yes") by keyword, so calibration and thresholds are checkable."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, prompts, words):
        assert list(words) == ["yes", "no"]
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            last = p.rsplit("\n\n", 1)[-1]
            yes = 0.8 if "Please" in last or "longer" in last else 0.6 if "N/A" in last or "[MASK]" in last or \
                last.startswith(("Text: \n", "Original: \n")) else 0.3
            out.append([yes, 1 - yes])
        return np.array(out)


def test_judge_asks_calibrated_questions_only_for_undecided_replies():
    scores = FakeScores()
    judge = GateJudge(scores)
    assert request_prompt("x").endswith("Text: x\nRequest:") and gain_prompt("a", "b").endswith("Rewritten: b\nMore:")
    p = judge.is_request(["Please think of rain.", "Rain falls."])
    assert judge.content_free["request"] == pytest.approx(0.6)
    assert p == pytest.approx(contextual_calibration(np.array([0.8, 0.3]), 0.6))
    assert len(scores.calls[1]) == len(CONTENT_FREE)  # content-free prompts asked once, then cached
    judge.is_request(["Rain falls."])
    assert len(scores.calls) == 3

    replies = _replies(["Write a limerick about a cat who loves rain but fears thunder and lightning.",  # decided
                        "Cats who love rain are rare.",  # no task cue: asks the judge
                        "Write a limerick about a cat who loves heavy summer rain."])  # 2 new words: asks the judge
    made = []

    def factory():
        made.append(1)
        return GateJudge(FakeScores())

    settings = GateSettings(checks=list(OPTIONAL_CHECKS), judge=True, threshold=0.5, version=1)
    _, verdicts = gate_replies(replies, "evol_instruct", settings, factory)
    assert made == [1]
    assert verdicts["pending"].to_list() == ["", "not_instruction", "no_gain"]
    assert math.isnan(verdicts["p_request"][0]) and verdicts["p_request"][1] < 0.5
    assert verdicts["p_gain"][2] < 0.5
    assert verdicts["reason"].to_list() == [None, "not_instruction", "no_gain"]
    lenient = GateSettings(checks=list(OPTIONAL_CHECKS), judge=True, threshold=0.1, version=1)
    assert gate_replies(replies, "evol_instruct", lenient, factory)[1]["reason"].to_list() == [None] * 3
    # nothing undecided: the judge model is never loaded
    made.clear()
    gate_replies(replies.head(1), "evol_instruct", settings, factory)
    assert made == []
    # no judge: a missing task cue drops the reply (strict), a borderline gain keeps it
    assert gate_replies(replies, "evol_instruct", DET)[1]["reason"].to_list() == [None, "not_instruction", None]


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    from teachfit.models import materialize

    out = tmp_path_factory.mktemp("models") / "judge"
    materialize("judge", {"source": "random", "arch": "llama"}, out)
    return out


def test_judge_runs_on_a_real_tiny_model_through_label_scorer(tiny_judge, tmp_path):
    """The rule's judge path: label_scorer over a (random) local model, calibrated probabilities in [0, 1]."""
    from teachfit.schema import defaults
    from teachfit.generation.engines import backend_settings

    replies = _replies(["Cats who love rain are rare.", "Rain is wet and cats dislike it a lot."])
    replies.write_parquet(tmp_path / "replies.parquet")
    backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("evolved", "parquet"), ("verdicts", "parquet"),
                                                     ("drops", "json"))}
    gate_instructions(tmp_path / "replies.parquet", tiny_judge, **out, scenario="evol_instruct", evolver="e",
                      round=1, gate={**dict(defaults("evolver.gate")), "threshold": 0.0}, backend=backend)
    verdicts = pl.read_parquet(out["verdicts"])
    p = verdicts["p_request"].to_numpy()
    assert np.all((p >= 0) & (p <= 1)) and verdicts["reason"].to_list() == [None, None]  # threshold 0 keeps all
    again = tmp_path / "again.parquet"
    gate_instructions(tmp_path / "replies.parquet", tiny_judge, out["evolved"], again, out["drops"],
                      scenario="evol_instruct", evolver="e", round=1,
                      gate={**dict(defaults("evolver.gate")), "threshold": 0.0}, backend=backend)
    assert pl.read_parquet(again)["p_request"].to_list() == verdicts["p_request"].to_list()  # deterministic


# ----------------------------------------------------------------------------- precision and recall


def test_labelled_set_covers_every_kind():
    labels = load_gate_labels()
    assert labels.height >= 60 and labels.filter(pl.col("label") == "valid").height >= 30
    assert set(labels["label"]) == {"valid", *(r for r in REASONS if r != "duplicate")}
    assert set(labels["split"]) == {"dev", "heldout"}


def test_gate_precision_and_recall_on_the_labelled_set_without_a_judge():
    """The deterministic gate (no judge; a text without an English task cue counts as not an
    instruction) on every labelled reply. The bar: at least 9 in 10 invalid replies dropped, at
    least 9 in 10 drops truly invalid, and every kind caught at least 3 times in 4 with its own
    reason. Reference values (`make gate-quality`, results/gate/quality.csv): dev 52/52 detected, 1 false drop;
    held-out 17/19 detected, no false drop."""
    predicted = predict_labels(load_gate_labels(), DET)
    quality = gate_quality(predicted)
    overall = quality.filter(pl.col("kind") == "all").row(0, named=True)
    assert overall["recall"] >= 0.9 and overall["precision"] >= 0.9
    per_kind = quality.filter(pl.col("kind") != "all")
    assert per_kind["recall_exact"].min() >= 0.75, per_kind
    # the one known false drop: a task whose right answer is a short apology (WizardLM rule 2)
    false = predicted.filter((pl.col("label") == "valid") & pl.col("predicted").is_not_null())
    assert false["predicted"].to_list() == ["response_refusal"]


def test_gate_quality_counts():
    t = pl.DataFrame({"label": ["valid", "valid", "empty", "empty", "no_gain"],
                      "predicted": [None, "empty", "empty", None, "not_instruction"]})
    q = gate_quality(t)
    all_ = q.filter(pl.col("kind") == "all").row(0, named=True)
    assert (all_["n"], all_["detected"], all_["exact"], all_["false_drops"]) == (3, 2, 1, 1)
    assert all_["recall"] == pytest.approx(2 / 3) and all_["precision"] == pytest.approx(2 / 3)
    empty = q.filter(pl.col("kind") == "empty").row(0, named=True)
    assert (empty["recall"], empty["precision"]) == (0.5, 0.5)
    assert math.isnan(q.filter(pl.col("kind") == "no_gain")["precision"][0])


def test_labels_file_errors_name_the_record(tmp_path):
    bad = tmp_path / "labels.jsonl"
    row = {"id": "a", "split": "dev", "scenario": "evol_instruct", "operation": "deepen", "parent": "p",
           "reply": "r", "response": None, "label": "fine"}
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="record 1 has label 'fine'"):
        load_gate_labels(bad)


# ----------------------------------------------------------------------------- rules


def _replies(texts, parent=VALID_PARENT, op="deepen"):
    n = len(texts)
    return pl.DataFrame({"parent_id": [f"p{i}" for i in range(n)], "root_id": [f"p{i}" for i in range(n)],
                         "round": [1] * n, "operation": [op] * n, "evolver": ["e"] * n, "parent": [parent] * n,
                         "prompt": [build_evol_prompt(parent, op)] * n, "reply": texts},
                        schema_overrides={"round": pl.Int64})


def test_gate_instructions_writes_kept_verdicts_and_counts(tmp_path, monkeypatch):
    monkeypatch.setattr("teachfit.studies.evolver.gate_judge.label_scorer", lambda *a, **k: pytest.fail("judge loaded"))
    _replies(["Write a limerick about a cat who loves rain but fears thunder, puddles and the neighbour's dog.",
              "#", VALID_PARENT]
             ).write_parquet(tmp_path / "r.parquet")
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("evolved", "parquet"), ("verdicts", "parquet"),
                                                     ("drops", "json"))}
    from teachfit.schema import defaults

    kept = gate_instructions(tmp_path / "r.parquet", "unused", **out, scenario="evol_instruct", evolver="e",
                             round=1, gate=defaults("evolver.gate"), backend={})
    assert kept.height == 1 and pl.read_parquet(out["evolved"]).equals(kept)
    report = json.loads(out["drops"].read_text())
    assert report["kept"] == 1 and report["input_rows"] == 3
    assert report["dropped"]["empty"] == 1 and report["dropped"]["no_gain"] == 1 and sum(report["dropped"].values()) == 2
    assert pl.read_parquet(out["verdicts"])["reason"].to_list() == [None, "empty", "no_gain"]
    with pytest.raises(DataError, match="missing required column"):
        pl.DataFrame({"reply": ["x"]}).write_parquet(tmp_path / "bad.parquet")
        gate_instructions(tmp_path / "bad.parquet", "unused", **out, scenario="evol_instruct", evolver="e", round=1,
                          gate=defaults("evolver.gate"), backend={})


def _pool(path, ids, rounds):
    pl.DataFrame({"id": ids, "instruction": [f"Write about {i} in detail." for i in ids], "root_id": ids,
                  "round": rounds, "evolver": ["e"] * len(ids)}, schema_overrides={"round": pl.Int64}
                 ).write_parquet(path)
    return path


def test_gate_responses_drops_refusals_and_empty_answers_per_round(tmp_path):
    from teachfit.schema import defaults

    pool = _pool(tmp_path / "pool.parquet", ["a", "b", "c", "d"], [1, 1, 2, 2])
    responses = ["A long, helpful answer about a.", "I'm sorry, I can't.", "...", "Fine answer about d."]
    pl.DataFrame({"id": ["a", "b", "c", "d"], "instruction": ["x"] * 4, "response": responses,
                  "reward": [1.0] * 4}).write_parquet(tmp_path / "resp.parquet")
    out = {"answered": tmp_path / "answered.parquet", "drops": tmp_path / "answered.json"}
    kept = gate_responses(pool, tmp_path / "resp.parquet", **out, evolver="e", scenario="evol_instruct",
                          gate=defaults("evolver.gate"))
    assert kept["id"].to_list() == ["a", "d"] and "reward" in kept.columns and "round" in kept.columns
    rep = json.loads(out["drops"].read_text())
    assert rep["rounds"] == [
        {"round": 1, "input_rows": 2, "valid": 1, "dropped": {"response_empty": 0, "response_refusal": 1}},
        {"round": 2, "input_rows": 2, "valid": 1, "dropped": {"response_empty": 1, "response_refusal": 0}}]
    pl.DataFrame({"id": ["a", "b"], "response": ["x", "y"]}).write_parquet(tmp_path / "short.parquet")
    with pytest.raises(DataError, match="2 instruction\\(s\\) of .* without a response"):
        gate_responses(pool, tmp_path / "short.parquet", **out, evolver="e", scenario="evol_instruct",
                       gate=defaults("evolver.gate"))


def _round_report(path, ev, rnd, n_in, kept, dropped):
    path.write_text(json.dumps({"evolver": ev, "scenario": "evol_instruct", "round": rnd, "input_rows": n_in,
                                "kept": kept, "dropped": dropped}))
    return str(path)


def _answered(tmp_path, ev, n, rounds, bad=()):
    ids = [f"{ev}{i}" for i in range(n)]
    pl.DataFrame({"id": ids, "instruction": [f"Write about {i}." for i in ids], "root_id": [f"s{i}" for i in range(n)],
                  "round": rounds, "evolver": [ev] * n, "response": ["ok"] * n},
                 schema_overrides={"round": pl.Int64}).write_parquet(tmp_path / f"{ev}.answered.parquet")
    per_round = {}
    for r in sorted(set(rounds)):
        per_round[r] = {"round": r, "input_rows": sum(x == r for x in rounds) + sum(1 for b in bad if b == r),
                        "valid": sum(x == r for x in rounds),
                        "dropped": {"response_empty": 0, "response_refusal": sum(1 for b in bad if b == r)}}
    (tmp_path / f"{ev}.answered.json").write_text(json.dumps({"evolver": ev, "scenario": "evol_instruct",
                                                              "rounds": list(per_round.values())}))
    return str(tmp_path / f"{ev}.answered.parquet"), str(tmp_path / f"{ev}.answered.json")


def _summary(tmp_path, ev, rows, rounds):
    p = tmp_path / f"{ev}.pool.json"
    p.write_text(json.dumps({"evolver": ev, "scenario": "evol_instruct", "rows": rows,
                             "rounds": {str(r): 0 for r in rounds}}))
    return str(p)


def test_merge_ranks_evolvers_and_never_crashes_on_an_empty_one(tmp_path):
    """An evolver with fewer than evolver.min_valid valid instructions is reported, not ranked and
    not equalized with the others (which keep their size); one that kept nothing does not crash."""
    from teachfit.studies.evolver.sets import merge_evolved

    big = _answered(tmp_path, "big", 6, [1, 1, 1, 2, 2, 2], bad=[2])
    mid = _answered(tmp_path, "mid", 5, [1, 1, 1, 2, 2])
    rounds = [_round_report(tmp_path / f"{ev}{r}.json", ev, r, n_in, kept, {"empty": n_in - kept - 1,
                                                                            "no_gain": 1})
              for ev, r, n_in, kept in (("big", 1, 8, 3), ("big", 2, 8, 4), ("mid", 1, 8, 3), ("mid", 2, 8, 2),
                                        ("tiny", 1, 8, 1), ("tiny", 2, 1, 0))]
    info = [{"seedset": "s", "scenario": "evol_instruct", "evolver": ev, "round": r}
            for ev, r in (("big", 1), ("big", 2), ("mid", 1), ("mid", 2), ("tiny", 1), ("tiny", 2))]
    out = {"merged": tmp_path / "m.parquet", "drops": tmp_path / "d.parquet", "ranking": tmp_path / "r.json"}
    table = merge_evolved([big[0], mid[0]], [big[1], mid[1]],
                          [_summary(tmp_path, "big", 7, [1, 2]), _summary(tmp_path, "mid", 5, [1, 2]),
                           _summary(tmp_path, "tiny", 1, [1, 2])],
                          rounds, **out, answered_evolvers=["big", "mid"], evolvers=["big", "mid", "tiny"],
                          round_info=info, equalize=True, min_valid=4, seed=0)
    ranking = json.loads(out["ranking"].read_text())
    assert ranking["ranked"] == ["big", "mid"] and ranking["min_valid"] == 4
    assert {e["evolver"]: (e["valid"], e["ranked"]) for e in ranking["evolvers"]} == {
        "big": (6, True), "mid": (5, True), "tiny": (1, False)}
    assert table.group_by("evolver").len().sort("evolver").rows() == [("big", 5), ("mid", 5)]  # tiny not equalized in
    drops = pl.read_parquet(out["drops"])

    def count(ev, rnd, reason):
        return drops.filter((pl.col("evolver") == ev) & (pl.col("round") == rnd) & (pl.col("reason") == reason))[
            "count"].sum()

    assert count("big", 2, "response_refusal") == 1 and count("big", 2, "valid") == 3
    for ev in ("big", "mid", "tiny"):
        for rnd in (1, 2):
            parts = sum(count(ev, rnd, r) for r in ("kept", "equalized_away", "unused_round", "unranked"))
            assert parts == count(ev, rnd, "valid"), (ev, rnd)
    assert count("tiny", 1, "unranked") == 1 and count("tiny", 1, "kept") == 0
    # nobody ranked: an empty merged table, no crash
    table = merge_evolved([], [], [_summary(tmp_path, "tiny", 0, [1, 2])], rounds[-2:], **out,
                          answered_evolvers=[], evolvers=["tiny"], round_info=info[-2:], equalize=True,
                          min_valid=4, seed=0)
    assert table.height == 0 and json.loads(out["ranking"].read_text())["ranked"] == []
    with pytest.raises(DataError, match="must be aligned"):
        merge_evolved([big[0]], [], [], [], **out, answered_evolvers=["big"], evolvers=["big"], round_info=[],
                      equalize=True, min_valid=4, seed=0)


def test_pool_and_split(tmp_path):
    from teachfit.studies.evolver.sets import pool_evolved, split_evolved

    r1 = _pool(tmp_path / "r1.parquet", ["a", "b"], [1, 1])
    r2 = _pool(tmp_path / "r2.parquet", ["c"], [2])
    empty = tmp_path / "r3.parquet"
    pl.DataFrame(schema={"id": pl.String, "instruction": pl.String}).write_parquet(empty)
    info = [{"seedset": "s", "scenario": "evol_instruct", "evolver": "e", "round": k} for k in (1, 2, 3)]
    out = {"instructions": tmp_path / "pool.parquet", "summary": tmp_path / "pool.json"}
    pool = pool_evolved([str(r1), str(r2), str(empty)], **out, round_info=info, evolver="e", scenario="evol_instruct",
                        use_rounds="all")
    assert pool["id"].to_list() == ["a", "b", "c"]
    assert json.loads(out["summary"].read_text())["rows"] == 3
    last = pool_evolved([str(r1), str(r2), str(empty)], **out, round_info=info, evolver="e",
                        scenario="evol_instruct", use_rounds="last")
    assert last.height == 0 and json.loads(out["summary"].read_text())["rounds"] == {"3": 0}
    with pytest.raises(DataError, match="round files of other evolvers"):
        pool_evolved([str(r1)], **out, round_info=[{**info[0], "evolver": "x"}], evolver="e",
                     scenario="evol_instruct", use_rounds="all")
    pool_evolved([str(r1), str(r2)], **out, round_info=info[:2], evolver="e", scenario="evol_instruct",
                 use_rounds="all")
    merged = tmp_path / "m.parquet"
    pl.read_parquet(out["instructions"]).with_columns(pl.lit("answer").alias("response"),
                                                      pl.lit(2.0).alias("reward")).write_parquet(merged)
    rows = split_evolved(merged, out["instructions"], tmp_path / "i.parquet", tmp_path / "resp.parquet", evolver="e")
    assert pl.read_parquet(tmp_path / "i.parquet").columns == pl.read_parquet(out["instructions"]).columns
    assert pl.read_parquet(tmp_path / "resp.parquet")["reward"].to_list() == [2.0] * rows.height
    with pytest.raises(DataError, match="not ranked"):
        split_evolved(merged, out["instructions"], tmp_path / "i.parquet", tmp_path / "r.parquet", evolver="other")


def _eval(path, values):
    pl.DataFrame({"task": ["tf_ifeval", "tf_arith", "tf_arith"],
                  "metric": ["prompt_level_loose_acc,none", "exact_match,flexible-extract", "x"],
                  "value": values, "is_final": [True, True, False]}).write_parquet(path)
    return str(path)


def _tables_inputs(tmp_path):
    stats = tmp_path / "stats.parquet"
    pl.DataFrame({"id": ["x", "y"], "seedset": ["general"] * 2, "scenario": ["evol_instruct"] * 2,
                  "evolver": ["small", "small"], "round": [1, 1], "length_words": [3, 5],
                  "difficulty": [2.0, 3.0], "nn_distance": [0.1, 0.2], "reward": [1.0, None]}).write_parquet(stats)
    drops = tmp_path / "drops.parquet"
    rows = [("small", 1, "replies", 8), ("small", 1, "empty", 1), ("small", 1, "no_gain", 2),
            ("small", 1, "response_refusal", 1), ("small", 1, "valid", 4), ("small", 1, "kept", 2),
            ("small", 1, "equalized_away", 2), ("small", 1, "unused_round", 0), ("small", 1, "unranked", 0),
            ("large", 1, "replies", 8), ("large", 1, "not_instruction", 7), ("large", 1, "valid", 1),
            ("large", 1, "kept", 0), ("large", 1, "equalized_away", 0), ("large", 1, "unused_round", 0),
            ("large", 1, "unranked", 1)]
    pl.DataFrame([{"evolver": e, "scenario": "evol_instruct", "round": r, "reason": k, "count": c}
                  for e, r, k, c in rows]).write_parquet(drops)
    ranking = tmp_path / "ranking.json"
    ranking.write_text(json.dumps({"min_valid": 4, "ranked": ["small"],
                                   "evolvers": [{"evolver": "small", "valid": 4, "ranked": True},
                                                {"evolver": "large", "valid": 1, "ranked": False}]}))
    top1 = []
    for i in range(2):
        p = tmp_path / f"t{i}.parquet"
        pl.DataFrame({"parent_id": ["x", "y"], "top1_logprobs": [[math.log(0.5), 0.0], [0.0]],
                      "first_top1_logprobs": [[math.log(0.25)] * 5, [math.log(0.75)] * 3]}).write_parquet(p)
        top1.append(str(p))
    return stats, drops, ranking, top1


def test_build_evolver_tables_reports_gate_counts_ranking_and_both_top1_statistics(tmp_path):
    from teachfit.schema import defaults
    from teachfit.studies.evolver.tables import build_evolver_tables

    stats, drops, ranking, top1 = _tables_inputs(tmp_path)
    runs = [{"dataset": "general-evol_instruct-small", "seedset": "general", "scenario": "evol_instruct",
             "evolver": "small", "generator": "g", "selection": "full", "base": "base"}]
    evals = [_eval(tmp_path / "e0.parquet", [0.25, 0.5, 9.0])]
    rounds = [{"seedset": "general", "scenario": "evol_instruct", "evolver": e, "round": 1} for e in ("small", "large")]
    out = {k: tmp_path / f"{k}.csv" for k in ("comparison_table", "stats_table", "selection_table", "top1_table")}
    build_evolver_tables([str(stats)], [str(drops)], [str(ranking)], evals, [], top1, **out,
                         drop_sets=[{"seedset": "general", "scenario": "evol_instruct"}], comparison_runs=runs,
                         selection_runs=[], top1_rounds=rounds, performance=defaults("performance"))
    comp = pl.read_csv(out["comparison_table"])
    assert comp["evolver"].to_list() == ["small"] and comp["average"].to_list() == [0.375]
    table = pl.read_csv(out["stats_table"])
    assert table.columns[:6] == ["seedset", "scenario", "evolver", "round", "ranked", "status"]
    large = table.filter(pl.col("evolver") == "large").row(0, named=True)
    assert not large["ranked"] and large["status"] == "not ranked: 1 valid < evolver.min_valid 4"
    assert (large["n_replies"], large["n_not_instruction"], large["n_dropped"], large["n_valid"],
            large["n_unranked"]) == (8, 7, 7, 1, 1)
    assert large["difficulty"] is None
    small = table.filter(pl.col("evolver") == "small").row(0, named=True)
    assert (small["n_dropped"], small["n_valid"], small["n_kept"], small["n_empty"], small["n_response_refusal"],
            small["difficulty"]) == (4, 4, 2, 1, 1, 2.5)
    assert small["n_replies"] == small["n_dropped"] + small["n_valid"]
    t1 = pl.read_csv(out["top1_table"])
    assert t1["mean"].to_list() == [2.5 / 3] * 2  # every sampled token: 0.5, 1, 1
    assert t1["first_n_tokens"].to_list() == [8.0] * 2  # min(len, 5) greedy tokens per reply
    assert t1["first_mean"].to_list() == pytest.approx([(5 * 0.25 + 3 * 0.75) / 8] * 2)
    # no evolver ranked: header-only comparison table
    build_evolver_tables([], [str(drops)], [str(ranking)], [], [], top1, **out,
                         drop_sets=[{"seedset": "general", "scenario": "evol_instruct"}], comparison_runs=[],
                         selection_runs=[], top1_rounds=rounds, performance=defaults("performance"))
    assert out["comparison_table"].read_text().startswith("seedset,scenario,evolver,teacher,selection,base,average")
    with pytest.raises(DataError, match="top1_rounds: 2 files but 1 metadata entries"):
        build_evolver_tables([str(stats)], [str(drops)], [str(ranking)], evals, [], top1, **out,
                             drop_sets=[{"seedset": "general", "scenario": "evol_instruct"}], comparison_runs=runs,
                             selection_runs=[], top1_rounds=rounds[:1], performance=defaults("performance"))


def test_output_space_kde_is_the_references(tmp_path):
    """Plot_figure/plot_logprob.py: scipy gaussian_kde with its default (Scott) bandwidth on
    linspace(0, 0.99, 1000)."""
    from scipy.stats import gaussian_kde

    from teachfit.schema import defaults
    from teachfit.studies.evolver.diversity import top1_kde, top1_probabilities
    from teachfit.studies.evolver.tables import build_evolver_tables, plot_evolver_figures

    probs = top1_probabilities([[math.log(0.25)] * 5, [math.log(0.75), 0.0], None])
    assert probs.tolist() == pytest.approx([0.25] * 5 + [0.75, 1.0])
    grid, dens = top1_kde(probs)
    assert grid.shape == (1000,) and grid[0] == 0 and grid[-1] == pytest.approx(0.99)
    assert dens == pytest.approx(gaussian_kde(probs, bw_method="scott")(np.linspace(0, 0.99, 1000)))
    assert top1_kde([0.5])[1] is None and top1_kde([0.5, 0.5])[1] is None

    stats, drops, ranking, top1 = _tables_inputs(tmp_path)
    rounds = [{"seedset": "general", "scenario": "evol_instruct", "evolver": e, "round": 1} for e in ("small", "large")]
    out = {k: tmp_path / f"{k}.csv" for k in ("comparison_table", "stats_table", "selection_table", "top1_table")}
    build_evolver_tables([str(stats)], [str(drops)], [str(ranking)], [], [], top1, **out,
                         drop_sets=[{"seedset": "general", "scenario": "evol_instruct"}], comparison_runs=[],
                         selection_runs=[], top1_rounds=rounds, performance=defaults("performance"))
    figs = {k: tmp_path / f"{k}.png" for k in ("top1_figure", "difficulty_figure", "selection_figure", "gate_figure")}
    plot_evolver_figures(top1, out["stats_table"], out["selection_table"], **figs, top1_rounds=rounds,
                         style=defaults("analysis.figures"))
    assert all(p.stat().st_size > 1000 for p in figs.values())


# ----------------------------------------------------------------------------- plan


def test_plan_pools_and_ranked_runs():
    from teachfit.workflow.config import validate_config
    from teachfit.workflow.plan import build_plan, pool_name

    cfg = validate_config({
        "models": {"inst": {"source": "random", "kind": "instruct"}, "base": {"source": "random", "kind": "base"},
                   "enc": {"source": "random", "kind": "encoder", "task": "encoder"}},
        "seedsets": {"s": {"path": "x.jsonl"}},
        "generators": {"g": {"model": "inst"}},
        "evolver": {"activate": True, "seedsets": ["s"], "evolvers": ["inst", "base"], "teacher": "g",
                    "bases": ["base"], "judge": "inst", "embedding_model": "enc", "scoring_model": "inst",
                    "scenarios": {"auto_evol": {"activate": False}},
                    "selection": {"evolvers": ["inst"], "methods": ["random"]}},
        "ifs": {"activate": True, "models": ["inst"], "objecqa": {"judge": "inst"}, "classifier": {"encoder": "enc"}},
    })
    plan = build_plan(cfg)
    assert pool_name("s", "evol_instruct", "inst") == "s-evol_instruct-inst-pool"
    assert "s-evol_instruct-inst-pool" in plan.names["datasets"] and "s-evol_instruct-inst-pool" in plan.names["answered"]
    assert "s-evol_instruct-inst" in plan.names["datasets"] and "s-evol_instruct-inst" not in plan.names["answered"]
    only_inst = {"s": {"evol_instruct": ["inst"]}}

    def ranked(seedset, scenario):
        return only_inst[seedset][scenario]

    assert {r.dataset for r in plan.runs} == {"s-evol_instruct-inst", "s-evol_instruct-base"}
    assert {r.dataset for r in plan.trained_runs(ranked)} == {"s-evol_instruct-inst"}
    assert {r["evolver"] for r in plan.evolver_runs("comparison", ranked)} == {"inst"}
    assert not any("s-evol_instruct-base" in p for p in plan.final_outputs(ranked))
    assert any("s-evol_instruct-base" in p for p in plan.final_outputs())
    assert "results/figures/evolver/gate_counts.png" in plan.final_outputs()


# The replies issue 15 lists as kept by the old pipeline, verbatim (parents written where the issue
# gives none): each is now dropped with the reason of its kind, or, for a leaked leading label,
# kept with the label stripped.
ISSUE15_REPLIES = [
    ("evol_instruct", "Write a short poem about the sea.", "#", "empty"),
    ("evol_instruct", "Write a short poem about the sea.",
     "The task is to rewrite a task instruction into a harder version of itself. The harder version should give "
     "more detail.", "prompt_copy"),
    ("evol_instruct", "What is a computer?", "### Response: A person is a person, a computer is a computer.",
     "not_instruction"),
    ("evol_instruct", "Write a short poem about the sea.",
     "The new instruction should be about a rare, less common topic.  ### Answer:", "prompt_copy"),
    ("evol_instruct", "Explain why the sky looks blue during the day.",
     "The sky looks blue during the day but red at sunset.", "not_instruction"),
    ("evol_instruct", "Give three tips for studying effectively.",
     "1. **Set a timer for 10 minutes**: This will help you stay focused on one task at a time.",
     "not_instruction"),
    ("evol_instruct", "Explain what a metaphor is.", "L'instytutelle est déjà précise, c'est le début de la légère.",
     "language"),
    ("evol_instruct", "Explain the difference between weather and climate.",
     "The difference between weather and climate is climate.", "no_gain"),
]


@pytest.mark.parametrize(("scenario", "parent", "reply", "reason"), ISSUE15_REPLIES)
def test_issue15_replies_are_dropped_with_their_reason(scenario, parent, reply, reason):
    from teachfit.studies.evolver.gate_checks import classify_failure

    assert classify_failure(parent, reply, scenario=scenario) == reason


def test_issue15_leading_label_is_stripped_and_the_instruction_kept():
    from teachfit.studies.evolver.gate_checks import check_instruction

    reply = ("Step 1 #Methods List#:\n- add a constraint\nStep 2 #Plan#:\nx\nStep 3 #Rewritten Instruction#:\ndraft\n"
             "Step 4 #Finally Rewritten Instruction#:\n#Instructions#: Write a haiku about the first snow of winter.")
    v = check_instruction("Write a haiku about winter.", reply, scenario="auto_evol")
    assert v.reason is None and v.instruction == "Write a haiku about the first snow of winter."
