from __future__ import annotations

import json
from collections import defaultdict

import polars as pl
import pytest

from teachfit.io import DataError, content_id
from teachfit.studies.evolver.autoif import (
    AutoIFSettings,
    VerifierCase,
    build_proposal_prompt,
    build_verifier_prompt,
    load_seed_instructions,
    pair_queries,
    parse_instruction_list,
    parse_verifier,
    pool_cases,
    propose_instructions,
    propose_verify_pair,
)

SEEDS = [
    "Answer in fewer than 50 words.",
    "Write your entire answer in lowercase letters.",
    "Do not use any commas in your answer.",
    "Start your answer with the word \"Certainly\".",
]
FAST_SANDBOX = {"startup_s": 2.0, "workers": 2}


def _reply(code: str | None, cases: list[tuple[str, bool]] | None) -> str:
    parts = ["Here you go."]
    if code is not None:
        parts.append(f"```python\n{code}\n```")
    if cases is not None:
        parts.append("```json\n" + json.dumps([{"response": r, "expected": e} for r, e in cases]) + "\n```")
    return "\n".join(parts)


LOWER_CASES = [("all lower here", True), ("Not Lower", False), ("ok fine", True), ("SHOUT", False)]
WORDS_CASES = [("short answer", True), ("word " * 60, False), ("one two three", True)]
COMMA_CASES = [("no commas here", True), ("a, b", False), ("x, y, z", False)]
CERT_CASES = [("Certainly, here it is.", True), ("Sure thing.", False), ("Certainly not.", True)]
SENT_CASES = [("One. Two.", True), ("One. Two. Three.", False), ("Just one.", True)]


def fake_model():
    """Deterministic evolver stand-in; verifier replies alternate per instruction."""
    calls: dict[str, int] = defaultdict(int)

    def gen(prompts: list[str]) -> list[str]:
        out = []
        for p in prompts:
            if p.startswith("We are collecting"):
                out.append(
                    "Here are new instructions:\n"
                    "1. Use no more than two sentences.\n"
                    "2. Answer in fewer than 50 words.\n"            # copy of a seed
                    "3. \"Use no more than two sentences.\"\n"       # duplicate
                    "4. End every sentence with an exclamation mark.\n"
                    f"5. {'x' * 400}\n"                              # too long
                )
                continue
            ins = p.split("Instruction: ", 1)[1].split("\n", 1)[0]
            k = calls[ins]
            calls[ins] += 1
            if ins == SEEDS[0]:
                code = "def evaluate(response: str) -> bool:\n    return len(response.split()) < 50"
                out.append(_reply(code, WORDS_CASES))
            elif ins == SEEDS[1]:
                good = "def evaluate(response: str) -> bool:\n    return response == response.lower()"
                nonbool = "def evaluate(response: str) -> bool:\n    return 'yes'"
                out.append(_reply(good if k == 0 else nonbool, LOWER_CASES))
            elif ins == SEEDS[2]:
                always = "def evaluate(response: str) -> bool:\n    return True"
                hostile = "import os\ndef evaluate(response: str) -> bool:\n    os.remove('/tmp/x')\n    return True"
                out.append(_reply(always if k == 0 else hostile, COMMA_CASES))
            elif ins == SEEDS[3]:
                broken = "def evaluate(response: str) -> bool\n    return response.startswith('Certainly')"
                out.append(_reply(broken, CERT_CASES))
            elif ins == "Use no more than two sentences.":
                code = ("import re\ndef evaluate(response: str) -> bool:\n"
                        "    return len([s for s in re.split(r'[.!?]', response) if s.strip()]) <= 2")
                out.append(_reply(code, SENT_CASES))
            elif ins == "End every sentence with an exclamation mark.":
                out.append(_reply("def evaluate(response: str) -> bool:\n    return response.endswith('!')", None))
            else:
                out.append("")
        return out

    return gen


@pytest.fixture
def queries():
    texts = ["Describe a rainy day.", "Explain how bread rises.", "Give tips for a job interview."]
    return pl.DataFrame({"id": [content_id("q", t) for t in texts], "instruction": texts})


def _config(**kw):
    """The rule's ``settings`` param with the schema's defaults (plan keys dropped), overridden."""
    from teachfit.schema import defaults
    from teachfit.workflow.plan import scenario_settings

    return {**scenario_settings(defaults("evolver.scenarios.autoif")), **kw}


def _settings(**kw):
    base = {"seed": 0, "proposal_prompts": 2, "examples_per_prompt": 3, "new_per_prompt": 5,
            "functions_per_instruction": 2, "min_cases": 3, "accuracy_threshold": 0.8, "timeout_s": 1.0,
            "sandbox": FAST_SANDBOX, "n_instructions": 100, "queries_per_instruction": None}
    return AutoIFSettings.from_dict(_config(**{**base, **kw}))


# ----------------------------------------------------------------------------- parsers


def test_parse_instruction_list_formats():
    assert parse_instruction_list("1. Use caps.\n2) No commas.\n- Start with Hi.\n* End with Bye.") == [
        "Use caps.", "No commas.", "Start with Hi.", "End with Bye."]
    # a header line and chatter around a numbered list are ignored
    assert parse_instruction_list("New ones:\n1. A rule.\nHope this helps!") == ["A rule."]
    # unmarked lines are chatter, not items (seen from SmolLM2-135M: "While I am an AI, I will not …")
    assert parse_instruction_list("While I am an AI, I will not copy your instructions.\nNo commas.") == []
    assert parse_instruction_list('1. "Quoted rule."\n2. **Bold rule.**') == ["Quoted rule.", "Bold rule."]
    assert parse_instruction_list("") == [] and parse_instruction_list(None) == []
    prompt = build_proposal_prompt(SEEDS[:2], 7)
    assert "- Answer in fewer than 50 words." in prompt and "Write 7 new instructions" in prompt


def test_parse_verifier_formats():
    code = "def evaluate(response: str) -> bool:\n    return True"
    reply = _reply(code, [("a", True), ("b", False)])
    got_code, cases = parse_verifier(reply)
    assert got_code == code and cases == [VerifierCase("a", True), VerifierCase("b", False)]
    # JSON-lines cases, string verdicts, a malformed case skipped, no fences at all
    raw = (f"import re\n{code}\n\n"
           '{"response": "x", "expected": "false"}\n{"response": "y", "expected": 1}\n{"response": "z", "expected": true}')
    got_code, cases = parse_verifier(raw)
    assert got_code.startswith("import re\ndef evaluate") and cases == [VerifierCase("x", False), VerifierCase("z", True)]
    # a dict with a "cases" key
    got_code, cases = parse_verifier(f"```python\n{code}\n```\n```json\n" + json.dumps(
        {"cases": [{"response": "q", "expected": True}]}) + "\n```")
    assert cases == [VerifierCase("q", True)]
    # no evaluate function / no cases
    assert parse_verifier("```python\ndef check(r):\n    return 1\n```") == (None, [])
    assert parse_verifier(None) == (None, [])
    assert "evaluate(response: str) -> bool" in build_verifier_prompt("Use caps.", 4)


def test_pool_cases_drops_contradictions():
    cases = [VerifierCase("a", True), VerifierCase("a", True), VerifierCase("b", True), VerifierCase("b", False), VerifierCase("c", False)]
    assert pool_cases(cases) == [VerifierCase("a", True), VerifierCase("c", False)]


# ----------------------------------------------------------------------------- steps


def test_propose_counts_drops():
    settings = _settings()
    new, counts = propose_instructions(SEEDS, fake_model(), settings)
    assert new == ["Use no more than two sentences.", "End every sentence with an exclamation mark."]
    # two identical replies: second reply's items are all duplicates
    assert counts["seed_copy"] == 2 and counts["too_long"] == 2 and counts["duplicate"] == 4
    capped, counts = propose_instructions(SEEDS, fake_model(), _settings(n_instructions=1))
    assert capped == ["Use no more than two sentences."] and counts["over_limit"] == 1
    assert counts["duplicate"] == 4  # the over-limit item seen again is a duplicate
    _, counts = propose_instructions(SEEDS, lambda ps: ["I'm sorry, I can't.", ""], settings)
    assert counts["refusal"] == 1 and counts["empty"] == 1


def test_propose_verify_pair_end_to_end(queries):
    res = propose_verify_pair(queries, fake_model(), _settings(), seed_instructions=SEEDS, evolver="tiny")
    v = res.verifiers
    by_reason = dict(zip(v["function_id"], v["reason"]))
    assert set(res.instructions) == set(SEEDS) | {"Use no more than two sentences.",
                                                  "End every sentence with an exclamation mark."}
    # kept: word count, lowercase (first sample), sentence count; everything else failed in the sandbox
    kept = v.filter(pl.col("kept"))
    assert sorted(kept["verifiable_instruction"]) == sorted([SEEDS[0], SEEDS[1], "Use no more than two sentences."])
    assert kept["accuracy"].to_list() == [1.0, 1.0, 1.0]
    assert sorted(r for r in by_reason.values() if r) == ["blocked", "low_accuracy", "non_bool", "syntax"]
    c = res.counts
    # the same code twice: word-count, "Certainly", sentence and exclamation rules
    assert c["verifier"]["duplicate_function"] == 4
    assert c["verifier"]["no_cases"] == 2            # the exclamation rule has no test cases
    assert c["function"]["low_accuracy"] == 1 and c["function"]["blocked"] == 1
    assert c["function"]["non_bool"] == 1 and c["function"]["syntax"] == 1
    assert c["instruction"] == {"too_few_cases": 1, "no_surviving_function": 2}
    # (d) pairing: one surviving instruction per query, lineage recorded
    p = res.pairs
    assert p.height == queries.height
    survivors = set(kept["verifiable_instruction"])
    for row in p.iter_rows(named=True):
        assert row["verifiable_instruction"] in survivors
        assert row["instruction"] == f"{row['query']} {row['verifiable_instruction']}"
        assert row["parent_id"] == row["root_id"] and row["parent_id"] in set(queries["id"])
        assert row["operation"] == "autoif" and row["evolver"] == "tiny" and row["round"] == 1
        assert row["id"] == content_id(row["parent_id"], "autoif", 1, row["instruction"])
        assert len(row["verifier_code"]) == 1 and row["verifier_accuracy"] == 1.0
    again = propose_verify_pair(queries, fake_model(), _settings(), seed_instructions=SEEDS, evolver="tiny")
    assert again.pairs["id"].to_list() == p["id"].to_list()


def test_pairing_options(queries):
    verifiers = pl.DataFrame({
        "instruction_id": ["i1", "i2", "i3"], "verifiable_instruction": ["Rule one.", "Rule two.", "Rule three."],
        "function_id": ["f1", "f2", "f3"], "code": ["c1", "c2", "c3"], "n_cases": [3, 3, 3],
        "accuracy": [1.0, 0.9, 0.5], "kept": [True, True, False], "reason": [None, None, "low_accuracy"],
        "failures": ["{}"] * 3,
    })
    both = pair_queries(queries, verifiers, _settings(pairs_per_query=5))
    assert both.height == 2 * queries.height  # only the two kept rules, each once per query
    assert set(both["verifiable_instruction"]) == {"Rule one.", "Rule two."}
    capped = pair_queries(queries, verifiers, _settings(pairs_per_query=2, max_pairs=4))
    assert capped.height == 4
    per_ins = pair_queries(queries, verifiers, _settings(queries_per_instruction=2))
    assert per_ins.height == 4 and per_ins["verifiable_instruction"].value_counts()["count"].to_list() == [2, 2]
    assert per_ins.group_by("verifiable_instruction").agg(pl.col("parent_id").n_unique())["parent_id"].to_list() == [2, 2]
    # stable under subsetting: dropping a query that was not picked changes nothing for the others
    one = pair_queries(queries, verifiers, _settings())
    sub = pair_queries(queries.head(2), verifiers, _settings())
    assert sub["id"].to_list() == one.filter(pl.col("parent_id").is_in(queries.head(2)["id"].to_list()))["id"].to_list()
    none = pair_queries(queries, verifiers.with_columns(pl.lit(False).alias("kept")), _settings())
    assert none.height == 0 and "verifier_code" in none.columns
    with pytest.raises(DataError, match="query table lacks"):
        pair_queries(queries.drop("instruction"), verifiers, _settings())


def test_settings_and_seed_file(tmp_path):
    from teachfit.io import package_data

    with pytest.raises(ValueError, match=r"unknown key\(s\) \['threshold'\]"):
        AutoIFSettings.from_dict(_config(seed=0, threshold=0.5))
    with pytest.raises(ValueError, match=r"autoif: missing key\(s\) \['seed'\]"):
        AutoIFSettings.from_dict(_config())
    with pytest.raises(ValueError, match="accuracy_threshold"):
        AutoIFSettings.from_dict(_config(seed=0, accuracy_threshold=1.5))
    with pytest.raises(ValueError, match="sandbox: unknown key"):
        AutoIFSettings.from_dict(_config(seed=0, sandbox={"cpu": 1}))
    with pytest.raises(ValueError, match=r"autoif.sandbox: set \['timeout_s'\] at autoif level"):
        AutoIFSettings.from_dict(_config(seed=0, sandbox={"timeout_s": 1}))
    s = AutoIFSettings.from_dict(_config(seed=0, timeout_s=0.5, memory_mb=128, sandbox={"workers": 1}))
    assert (s.sandbox_settings.timeout_s, s.sandbox_settings.memory_mb, s.sandbox_settings.workers) == (0.5, 128, 1)
    # the config's values reach the settings (no second default here)
    d = AutoIFSettings.from_dict(_config(seed=0))
    assert (d.n_instructions, d.functions_per_instruction, d.accuracy_threshold, d.queries_per_instruction) == (
        8, 2, 0.5, 4)
    assert len(load_seed_instructions(package_data("autoif_seed_instructions.txt"))) >= 10
    (tmp_path / "s.txt").write_text("# only comments\n\n")
    with pytest.raises(DataError, match="no seed instructions"):
        load_seed_instructions(tmp_path / "s.txt")
    with pytest.raises(DataError, match="does not exist"):
        load_seed_instructions(tmp_path / "missing.txt")


def test_evolve_autoif_writes_outputs(tmp_path, queries, monkeypatch):
    """The rule function (``evolve_autoif``) with the fake evolver instead of a model."""
    import teachfit.studies.evolver.autoif
    from teachfit.schema import defaults
    from teachfit.generation.engines import backend_settings
    from teachfit.studies.evolver.autoif import evolve_autoif

    made = []

    def fake_make_generate_fn(model_dir, generation, backend, threads=None, desc=""):
        made.append((generation, backend, threads))
        return fake_model()

    monkeypatch.setattr(teachfit.studies.evolver.autoif, "make_generate_fn", fake_make_generate_fn)
    queries.write_parquet(tmp_path / "q.parquet")
    (tmp_path / "seeds.txt").write_text("\n".join(SEEDS[:2]) + "\n")
    settings = _config(proposal_prompts=1, examples_per_prompt=2, functions_per_instruction=1, timeout_s=1.0,
                       sandbox=FAST_SANDBOX, queries_per_instruction=None)
    backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
    out = evolve_autoif(tmp_path / "q.parquet", tmp_path / "seeds.txt", "unused", tmp_path / "pairs.parquet",
                        tmp_path / "report.json", tmp_path / "verifiers.parquet", evolver="tiny",
                        settings=settings, max_new_tokens=16, prompt_format="chat", backend=backend, seed=0,
                        threads=2)
    report = json.loads((tmp_path / "report.json").read_text())
    pairs = pl.read_parquet(tmp_path / "pairs.parquet")
    assert report["pairs"] == report["kept"] == pairs.height == out.height == 3
    assert report["functions_kept"] == pl.read_parquet(tmp_path / "verifiers.parquet")["kept"].sum() == 3
    assert (report["scenario"], report["round"], report["input_rows"], report["evolver"]) == ("autoif", 1, 3, "tiny")
    assert all(":" in k for k in report["dropped"]) and report["dropped"]["propose:seed_copy"] == 1
    assert set(pairs["scenario"]) == {"autoif"}
    generation, used_backend, threads = made[0]
    assert used_backend == backend and threads == 2
    assert (generation.temperature, generation.logprobs, generation.max_new_tokens) == (0.0, False, 16)
