"""teachfit.training.selection: selection as the reference code selects (Cherry_LLM data_by_IFD.py's
IFD > 1 filter and survivor denominator; Evolution-Analysis select_data.py's directions), NaN
scores, ties, k rounding; rule select_trainset's provenance counts and selection_comparison.csv."""

from __future__ import annotations

import math

import polars as pl
import pytest

from teachfit.io import DataError, read_parquet
from teachfit.training.selection import COUNT_COLUMNS, IFD_MAX, select_top, select_trainset

NAN = float("nan")


def _counts(sel: pl.DataFrame) -> dict[str, int]:
    return sel.select(COUNT_COLUMNS).row(0, named=True)


def test_ifd_drops_pairs_above_one_before_top_k():
    """Issue 11's failing input: IFD = [1.8, 0.9, 0.8, 0.3], top 50 % keeps b, c (a has IFD > 1:
    the instruction does not help; Cherry_LLM data_by_IFD.py:106-107). It used to keep a, b."""
    df = pl.DataFrame({"id": ["a", "b", "c", "d"], "ifd": [1.8, 0.9, 0.8, 0.3]})
    sel = select_top(df, "ifd", 50)
    assert sel["id"].to_list() == ["b", "c"]
    assert _counts(sel) == {"n_candidates": 4, "n_dropped_no_score": 0, "n_dropped_ifd_gt1": 1,
                            "n_ranked": 3, "n_selected": 2, "n_truncated": 0}


def test_ifd_filter_keeps_exactly_one_and_uses_the_survivors_as_denominator():
    """IFD == 1 is kept (the filter is "> 1"); the rate applies to the survivors
    (data_by_IFD.py:118-119): 10 % of 3 survivors is 1 row, not 10 % of 10."""
    df = pl.DataFrame({"id": list("abcdefghij"),
                       "ifd": [1.0, 1.0000001, 0.5, 0.7, 2.0, 3.0, 1.5, 1.2, 1.1, 9.0]})
    sel = select_top(df, "ifd", 10)
    assert sel["id"].to_list() == ["a"] and IFD_MAX == 1.0
    assert _counts(sel)["n_dropped_ifd_gt1"] == 7 and _counts(sel)["n_ranked"] == 3
    assert select_top(df, "ifd", 100)["id"].to_list() == ["a", "d", "c"]


def test_icifd_has_no_ifd_filter():
    """IC-IFD = IFD / L(Q) is not bounded by 1 and Evolution-Analysis filters nothing: a pair
    with IFD > 1 and IC-IFD > 1 can be the best by IC-IFD."""
    df = pl.DataFrame({"id": ["a", "b", "c"], "ifd": [1.4, 0.9, 0.5], "icifd": [2.8, 0.9, 1.1]})
    sel = select_top(df, "icifd", 50)
    assert sel["id"].to_list() == ["a", "c"] and _counts(sel)["n_dropped_ifd_gt1"] == 0


@pytest.fixture
def scored():
    return pl.DataFrame({
        "id": ["e", "d", "c", "b", "a", "f"],
        "icifd": [0.5, 0.9, 0.9, 0.1, 0.7, NAN],
        "ifd": [0.2, 0.3, 0.4, 0.5, 0.6, 0.1],
        "loss_q": [1.0, 3.0, 2.0, 5.0, 4.0, None],
        "n_instruction_tokens": [5, 50, 500, 10, 5, 1],
        "truncated": [False, True, False, False, False, True],
    })


def test_directions_follow_the_references(scored):
    """IC-IFD and IFD highest first; PPL = lowest instruction loss L(Q) first (select_data.py:71,
    77); length = fewest instruction tokens first (select_data.py:54, 78)."""
    assert select_top(scored, "icifd", 50)["id"].to_list() == ["d", "c", "a"]
    assert select_top(scored, "ifd", 34)["id"].to_list() == ["a", "b", "c"]  # ceil(6 * 0.34) = 3
    assert select_top(scored, "ppl", 40)["id"].to_list() == ["e", "c"]   # ceil(5 ranked * 0.4) = 2
    assert select_top(scored, "length", 50)["id"].to_list() == ["f", "e", "a"]


def test_ties_keep_the_input_order(scored):
    """Ties keep the file order, as Python's stable sorted() in select_data.py: d before c
    (IC-IFD 0.9 each) and e before a (5 instruction tokens each), although c < d and a < e by id."""
    assert select_top(scored, "icifd", 100)["id"].to_list()[:2] == ["d", "c"]
    assert select_top(scored, "length", 100)["id"].to_list()[:3] == ["f", "e", "a"]
    assert select_top(scored.reverse(), "length", 100)["id"].to_list()[:3] == ["f", "a", "e"]


def test_nan_and_null_scores_are_not_ranked_and_are_counted(scored):
    ic = select_top(scored, "icifd", 100)
    assert "f" not in ic["id"].to_list() and _counts(ic)["n_dropped_no_score"] == 1
    assert _counts(ic)["n_ranked"] == 5 and ic.height == 5
    ppl = select_top(scored, "ppl", 100)
    assert "f" not in ppl["id"].to_list() and _counts(ppl)["n_dropped_no_score"] == 1
    assert _counts(select_top(scored, "ifd", 100))["n_dropped_no_score"] == 0
    none = pl.DataFrame({"id": ["a", "b"], "ifd": [NAN, None]}, schema={"id": pl.String, "ifd": pl.Float64})
    assert select_top(none, "ifd", 50).height == 0


def test_k_rounds_up_on_the_ranked_rows_and_keeps_one(scored):
    assert select_top(scored, "ifd", 34).height == math.ceil(6 * 0.34)  # no filter hits here
    assert select_top(scored, "ifd", 1).height == 1
    assert select_top(scored, "icifd", 20).height == math.ceil(5 * 0.2)
    assert select_top(scored, "icifd", 33.3)["selection_percent"].to_list() == [33.3, 33.3]


def test_truncated_rows_are_counted_and_ranked(scored):
    sel = select_top(scored, "icifd", 100)
    assert _counts(sel)["n_truncated"] == 2 and "d" in sel["id"].to_list()


def test_random_and_full(scored):
    r0 = select_top(scored, "random", 50, seed=0)
    assert r0.height == 3 and r0["id"].to_list() == select_top(scored, "random", 50, seed=0)["id"].to_list()
    picks = {tuple(select_top(scored, "random", 50, seed=s)["id"]) for s in range(10)}
    assert len(picks) > 1
    full = select_top(scored, "full", 10)
    assert full.height == 6 and full["selection_percent"].to_list() == [100.0] * 6
    assert full["id"].to_list() == sorted(scored["id"].to_list())
    assert _counts(full) == {"n_candidates": 6, "n_dropped_no_score": 0, "n_dropped_ifd_gt1": 0,
                             "n_ranked": 6, "n_selected": 6, "n_truncated": 2}
    assert r0["selection_rank"].to_list() == [0, 1, 2] and r0["selection"].to_list() == ["random"] * 3


def test_errors(scored):
    with pytest.raises(ValueError, match="unknown"):
        select_top(scored, "best", 10)
    with pytest.raises(ValueError, match="top_percent"):
        select_top(scored, "ifd", 0)
    with pytest.raises(DataError, match="no score column 'ifd'"):
        select_top(scored.drop("ifd"), "ifd", 10)
    with pytest.raises(DataError, match="no score column 'n_instruction_tokens'"):
        select_top(scored.drop("n_instruction_tokens"), "length", 10)
    # another column, the method's direction and filter
    assert select_top(scored, "ifd", 10, score_columns={"ifd": "icifd"})["id"].to_list() == ["d"]


def _scores_file(path, ids, lq, laq, la, truncated=None):
    n = len(ids)
    pl.DataFrame({"id": ids, "loss_q": lq, "loss_a_given_q": laq, "loss_a": la, "n_a_tokens": [5] * n,
                  "n_instruction_tokens": list(range(3, 3 + n)),
                  "truncated": truncated or [False] * n}).write_parquet(path)
    return str(path)


def test_plan_passes_the_selection_version_to_every_trainset():
    """A change of the selection rules (evolver.selection.version) re-runs every select_trainset
    job, the teacher study's full sets included (the rule's params change)."""
    from real_models import ROOT

    from teachfit.schema import load_yaml

    from teachfit.workflow.config import validate_config
    from teachfit.workflow.plan import build_plan

    cfg = validate_config(load_yaml(ROOT / "config" / "config.yaml"))
    methods = build_plan(cfg).selection_methods()
    assert {m["version"] for m in methods.values()} == {cfg["evolver"]["selection"]["version"]} == {2}
    cfg["evolver"]["activate"] = False
    assert build_plan(cfg).selection_methods() == {"full": {"method": "full", "top_percent": 100.0, "version": 2}}


def test_select_trainset_writes_the_counts_and_refuses_an_empty_selection(tmp_path):
    responses = tmp_path / "responses.parquet"
    pl.DataFrame({"id": list("abcde"), "instruction": ["q"] * 5,
                  "response": ["r1", "r2", "r3", "r4", " "]}).write_parquet(responses)
    # IFD = laq / la = 1.8, 0.9, 0.8, 0.3 (e: empty response, dropped before)
    scores = _scores_file(tmp_path / "s.parquet", list("abcde"), [1.0] * 5, [1.8, 0.9, 0.8, 0.3, 1.0],
                          [1.0] * 5, truncated=[False, False, True, False, False])
    out = tmp_path / "trainset.parquet"
    kept = select_trainset(responses, [scores], out,
                           {"method": "ifd", "top_percent": 50.0, "seed": 0, "version": 2}, "ifd50")
    back = read_parquet(out)
    assert back["id"].to_list() == ["b", "c"] and kept.equals(back)
    row = back.row(0, named=True)
    assert row["selection_version"] == 2
    assert (row["n_dropped_empty"], row["n_candidates"], row["n_dropped_ifd_gt1"], row["n_ranked"],
            row["n_selected"], row["n_truncated"]) == (1, 4, 1, 3, 2, 1)
    assert row["selection_label"] == "ifd50"
    high = _scores_file(tmp_path / "high.parquet", list("abcde"), [1.0] * 5, [2.0] * 5, [1.0] * 5)
    with pytest.raises(DataError, match="kept nothing.*IFD > 1"):
        select_trainset(responses, [high], tmp_path / "never.parquet",
                        {"method": "ifd", "top_percent": 50.0, "seed": 0}, "ifd50")
    assert not (tmp_path / "never.parquet").exists()
    # the length baseline ranks by the scores' instruction token counts
    length = select_trainset(responses, [scores], tmp_path / "len.parquet",
                             {"method": "length", "top_percent": 50.0, "seed": 0}, "length50")
    assert length["id"].to_list() == ["a", "b"]


def test_selection_comparison_carries_the_trainset_counts(tmp_path):
    from teachfit.schema import defaults
    from teachfit.studies.evolver.tables import build_evolver_tables

    def _eval(path):
        pl.DataFrame({"task": ["tf_ifeval"], "metric": ["prompt_level_loose_acc,none"], "value": [0.5],
                      "is_final": [True]}).write_parquet(path)
        return str(path)

    responses = tmp_path / "responses.parquet"
    pl.DataFrame({"id": list("abcd"), "instruction": ["q"] * 4, "response": ["r"] * 4}).write_parquet(responses)
    scores = _scores_file(tmp_path / "s.parquet", list("abcd"), [1.0] * 4, [1.8, 0.9, 0.8, 0.3], [1.0] * 4)
    trainsets = []
    for method in ("ifd", "full"):
        p = tmp_path / f"{method}.parquet"
        select_trainset(responses, [scores] if method != "full" else [], p,
                        {"method": method, "top_percent": 50.0, "seed": 0}, f"{method}50")
        trainsets.append(str(p))
    runs = [{"dataset": "s-evol_instruct-e", "seedset": "s", "scenario": "evol_instruct", "evolver": "e",
             "generator": "g", "selection": sel, "base": "b"} for sel in ("ifd50", "full")]
    stats = tmp_path / "stats.parquet"
    pl.DataFrame({"id": ["x"], "seedset": ["s"], "scenario": ["evol_instruct"], "evolver": ["e"], "round": [1],
                  "length_words": [3], "difficulty": [2.0], "nn_distance": [0.1], "reward": [1.0]}).write_parquet(stats)
    drops = tmp_path / "drops.parquet"
    pl.DataFrame({"evolver": ["e"] * 3, "scenario": ["evol_instruct"] * 3, "round": [1] * 3,
                  "reason": ["replies", "valid", "kept"], "count": [4, 4, 4]}).write_parquet(drops)
    ranking = tmp_path / "ranking.json"
    ranking.write_text('{"min_valid": 1, "ranked": ["e"], "evolvers": [{"evolver": "e", "valid": 4, "ranked": true}]}')
    out = {k: tmp_path / f"{k}.csv" for k in ("comparison_table", "stats_table", "selection_table", "top1_table")}
    evals = [_eval(tmp_path / f"e{i}.parquet") for i in range(2)]
    common = {"drop_sets": [{"seedset": "s", "scenario": "evol_instruct"}], "comparison_runs": runs[1:],
              "selection_runs": runs, "top1_rounds": [], "performance": defaults("performance")}
    build_evolver_tables([str(stats)], [str(drops)], [str(ranking)], [evals[1]], evals, [], **out, **common,
                         selection_trainsets=trainsets)
    sel = pl.read_csv(out["selection_table"])
    assert sel.select("selection", "n_candidates", "n_dropped_ifd_gt1", "n_ranked", "n_selected").rows() == [
        ("full", 4, 0, 4, 4), ("ifd50", 4, 1, 3, 2)]
    with pytest.raises(DataError, match="selection_runs \\(trainsets\\): 1 files but 2"):
        build_evolver_tables([str(stats)], [str(drops)], [str(ranking)], [evals[1]], evals, [], **out, **common,
                             selection_trainsets=trainsets[:1])
