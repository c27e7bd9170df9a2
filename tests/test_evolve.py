from __future__ import annotations

import json
import math
import sys
import types
from collections import Counter

import polars as pl
import pytest

from teachfit.io import DataError, content_id
from teachfit.studies.evolver.evolve import (
    FAILURE_REASONS,
    OPERATIONS,
    EvolSettings,
    EvolverGeneration,
    FilterSettings,
    assign_operations,
    auto_evol_round,
    build_auto_evol_prompt,
    build_evol_prompt,
    classify_failure,
    evolve_round,
    is_copy,
    make_generate_fn,
    parse_auto_evol,
    parse_evolved,
)
from teachfit.studies.evolver.sets import equalize_sizes

ORIG = "Write a haiku about winter."
GOOD = "Write a haiku about winter that mentions a red fox hiding in the snow."


# ----------------------------------------------------------------------------- prompts + parsing


def test_prompts_name_the_instruction_and_differ_per_operation():
    prompts = {op: build_evol_prompt(ORIG, op) for op in OPERATIONS}
    assert len(set(prompts.values())) == len(OPERATIONS)
    assert all(ORIG in p for p in prompts.values())
    assert prompts["breadth"].rstrip().endswith("#New Instruction#:")
    assert prompts["deepen"].rstrip().endswith("#Rewritten Instruction#:")
    with pytest.raises(ValueError, match="unknown evolution operation 'shorten'"):
        build_evol_prompt(ORIG, "shorten")
    auto = build_auto_evol_prompt(ORIG)
    for marker in ("#Methods List#", "#Plan#", "#Rewritten Instruction#", "#Finally Rewritten Instruction#"):
        assert marker in auto


@pytest.mark.parametrize("reply", [
    f"#Rewritten Instruction#:\n{GOOD}",
    f"Rewritten Prompt: {GOOD}",
    f"**Rewritten Instruction:** {GOOD}",
    f"Sure! Here is the rewritten instruction:\n\n\"{GOOD}\"\n\nThis rewritten version adds a fox.",
    f"Rewritten Instruction: {GOOD}\n\nExplanation: I added an animal.",
    f"{GOOD}\n\nI added a constraint about the fox.",
    f"“{GOOD}”",
    f"```\n{GOOD}\n```",
    f"#New Instruction#:\n{GOOD}\n---\nNotes on the change",
    # the model echoes the end of the prompt before answering
    (f"Reply with the harder instruction only, right after the line #Rewritten Instruction#:\n"
     f"#Rewritten Instruction#:\n{GOOD}"),
])
def test_parse_evolved_extracts_the_instruction(reply):
    assert parse_evolved(reply) == GOOD


def test_parse_evolved_keeps_multiline_instructions_and_inner_quotes():
    text = 'Summarize the text in "two" sentences.\n\nBees visit flowers.\nThey carry pollen.'
    assert parse_evolved(f"#Rewritten Instruction#:\n{text}") == text
    assert parse_evolved("   ") is None and parse_evolved(None) is None
    assert parse_evolved("#Rewritten Instruction#:\n   \n") is None


def test_parse_auto_evol_keeps_only_the_final_rewrite():
    reply = (
        "Step 1 #Methods List#:\n- add a constraint\n- ask for reasoning\n"
        "Step 2 #Plan#:\nAdd an animal and a syllable rule.\n"
        "Step 3 #Rewritten Instruction#:\nWrite a haiku about a fox.\n"
        f"Step 4 #Finally Rewritten Instruction#:\n{GOOD}\n"
    )
    assert parse_auto_evol(reply) == GOOD
    assert parse_auto_evol(f"**Step 4 #Finally Rewritten Instruction#:** \"{GOOD}\"") == GOOD
    # no Step 4 section, or an empty one: unparseable (never falls back to step 3)
    assert parse_auto_evol(reply.split("Step 4")[0]) is None
    assert parse_auto_evol(reply.split("Step 4")[0] + "Step 4 #Finally Rewritten Instruction#:\n") is None
    assert classify_failure(ORIG, reply.split("Step 4")[0], parser=parse_auto_evol) == "unparseable"


@pytest.mark.parametrize("reply, reason", [
    ("", "empty"),
    ("   \n ", "empty"),
    (None, "empty"),
    ("I'm sorry, but I can't help with rewriting this.", "refusal"),
    ("#Rewritten Instruction#:\nAs an AI language model I cannot write poems.", "refusal"),
    ("Sorry, I am unable to do that.", "refusal"),
    ("#Rewritten Instruction#:\n", "unparseable"),
    ("#Rewritten Instruction#:\nRewrite the given prompt so that it is harder.", "unparseable"),
    ("#Instruction#: Write a haiku about winter. #Rewritten Instruction#: x #Instruction# y", "unparseable"),
    (f"#Rewritten Instruction#:\n{ORIG}", "copy"),
    ("#Rewritten Instruction#:\nwrite a HAIKU about winter!!", "copy"),
    ("#Rewritten Instruction#:\nWrite one haiku about winter.", "copy"),  # near copy: one new word
    ("#Rewritten Instruction#:\n" + "Write a very long haiku. " * 300, "too_long"),
    (f"#Rewritten Instruction#:\n{GOOD}", None),
    ("Write an apology letter that starts with 'I am sorry for being late'.", None),
])
def test_classify_failure(reply, reason):
    assert classify_failure(ORIG, reply) == reason


def test_copy_thresholds_are_settings():
    assert is_copy(ORIG, "Write one haiku about winter.")
    assert not is_copy(ORIG, "Write one haiku about winter.", min_new_words=1)
    strict = FilterSettings(max_chars=30)
    assert classify_failure(ORIG, f"#Rewritten Instruction#:\n{GOOD}", filters=strict) == "too_long"
    with pytest.raises(ValueError):
        FilterSettings(copy_ratio=1.5)


# ----------------------------------------------------------------------------- operations


def test_assign_operations_is_seeded_and_stable_under_subsets():
    ids = [f"id{i}" for i in range(200)]
    ops = assign_operations(ids, OPERATIONS, seed=0, round=1)
    assert ops == assign_operations(ids, OPERATIONS, seed=0, round=1)
    assert set(ops) == set(OPERATIONS)
    assert min(Counter(ops).values()) > 20  # roughly uniform over 5 operations
    assert ops != assign_operations(ids, OPERATIONS, seed=1, round=1)
    assert ops != assign_operations(ids, OPERATIONS, seed=0, round=2)
    sub = ids[50:60][::-1]
    assert assign_operations(sub, OPERATIONS, 0, 1) == [ops[ids.index(i)] for i in sub]
    assert set(assign_operations(ids, ["deepen"], 0, 1)) == {"deepen"}
    with pytest.raises(ValueError, match="unknown evolution operation"):
        assign_operations(ids, ["deepen", "widen"], 0, 1)


# ----------------------------------------------------------------------------- rounds


def _instruction_of(prompt: str) -> str:
    return prompt.split("#Instruction#:\n", 1)[1].split("\n\nReply with", 1)[0].split("\n\nLayout", 1)[0]


def fake_evolver(prompts: list[str]) -> list[str]:
    """Deterministic stand-in for a model: the behaviour is keyed by words in the instruction."""
    out = []
    for p in prompts:
        ins = _instruction_of(p)
        if "REFUSE" in ins:
            out.append("I'm sorry, but I cannot help with that request.")
        elif "COPY" in ins:
            out.append(f"#Rewritten Instruction#:\n{ins}")
        elif "EMPTY" in ins:
            out.append("")
        elif "GARBLE" in ins:
            out.append("#Rewritten Instruction#:\n\n")
        elif "SAME" in ins:
            out.append("#Rewritten Instruction#:\nDescribe a lighthouse keeper's night in exactly five sentences.")
        elif "Step 4" in p:
            out.append(f"Step 1 #Methods List#:\n- more\nStep 2 #Plan#:\nx\nStep 3 #Rewritten Instruction#:\ndraft"
                       f"\nStep 4 #Finally Rewritten Instruction#:\n{ins} Justify each step of your answer.")
        else:
            out.append(f"Sure, here it is:\n#Rewritten Instruction#:\n{ins} Use at least two concrete examples."
                       "\n\nExplanation: I asked for examples.")
    return out


@pytest.fixture
def records():
    texts = ["Explain photosynthesis.", "List three uses of copper.", "REFUSE this one.",
             "COPY this one please.", "EMPTY reply here.", "GARBLE reply here.", "SAME text A.", "SAME text B."]
    return pl.DataFrame({
        "id": [content_id("s", t) for t in texts], "instruction": texts,
        "seedset": ["demo"] * len(texts), "category": ["c"] * len(texts),
    })


def test_evolve_round_keeps_lineage_and_counts_drops(records):
    calls = []

    def gen(prompts):
        calls.append(len(prompts))
        return fake_evolver(prompts)

    kept, counts = evolve_round(records, gen, OPERATIONS, seed=3, round=1, evolver="tiny")
    assert calls == [records.height]  # one batched call per round
    assert set(counts) == set(FAILURE_REASONS)
    assert counts == {"empty": 1, "refusal": 1, "unparseable": 1, "too_long": 0, "copy": 1, "duplicate": 1}
    assert kept.height == 3 == records.height - sum(counts.values())
    assert kept.columns == ["id", "parent_id", "root_id", "round", "operation", "evolver", "instruction",
                            "seedset", "category"]
    ops = dict(zip(records["id"], assign_operations(records["id"].to_list(), OPERATIONS, 3, 1)))
    for row in kept.iter_rows(named=True):
        assert row["root_id"] == row["parent_id"] and row["round"] == 1 and row["evolver"] == "tiny"
        assert row["operation"] == ops[row["parent_id"]]
        assert row["id"] == content_id(row["parent_id"], row["operation"], 1, row["instruction"])
        assert not row["instruction"].startswith(("Sure", "#")) and "Explanation" not in row["instruction"]
    assert "Explain photosynthesis. Use at least two concrete examples." in kept["instruction"].to_list()
    # a second round chains on the first: root ids survive, parents are round-1 ids
    kept2, _ = evolve_round(kept, fake_evolver, OPERATIONS, seed=3, round=2, evolver="tiny")
    assert kept2.height == kept.height
    assert set(kept2["parent_id"]) == set(kept["id"]) and set(kept2["root_id"]) == set(kept["root_id"])
    assert kept2["round"].to_list() == [2] * kept2.height


def test_evolve_round_checks_its_inputs(records):
    with pytest.raises(ValueError, match="returned 1 outputs for 8 prompts"):
        evolve_round(records, lambda ps: ["x"], OPERATIONS, seed=0)
    with pytest.raises(DataError, match="lacks column"):
        evolve_round(records.drop("instruction"), fake_evolver, OPERATIONS, seed=0)
    with pytest.raises(DataError, match="not unique"):
        evolve_round(pl.concat([records, records]), fake_evolver, OPERATIONS, seed=0)
    kept, counts = evolve_round(records.head(0), fake_evolver, OPERATIONS, seed=0)
    assert kept.height == 0 and "root_id" in kept.columns and sum(counts.values()) == 0


def test_auto_evol_round(records):
    kept, counts = auto_evol_round(records, fake_evolver, seed=0, round=1, evolver="tiny")
    # REFUSE / EMPTY / GARBLE / COPY / SAME replies carry no Step 4 section
    assert counts["refusal"] == 1 and counts["empty"] == 1 and counts["unparseable"] == 4
    assert kept.height == 2
    assert set(kept["operation"]) == {"auto_evol"}
    assert all(t.endswith("Justify each step of your answer.") for t in kept["instruction"])
    assert "draft" not in " ".join(kept["instruction"])


# ----------------------------------------------------------------------------- equal sizes


def _set(roots: list[int], tag: str) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"{tag}{r}" for r in roots], "root_id": [f"r{r}" for r in roots]})


def test_equalize_sizes_prefers_shared_roots():
    sets = {"a": _set(list(range(10)), "a"), "b": _set([*range(6), 20, 21, 22, 23], "b"), "c": _set(list(range(6)), "c")}
    out = equalize_sizes(sets, seed=0)
    assert {k: v.height for k, v in out.items()} == {"a": 6, "b": 6, "c": 6}
    assert all(set(v["root_id"]) == {f"r{i}" for i in range(6)} for v in out.values())
    assert out["c"].equals(sets["c"].sort("id"))


def test_equalize_sizes_fills_with_seeded_non_shared_rows():
    sets = {"a": _set([0, 1, 2, 3, 4, 30], "a"), "b": _set(list(range(9)), "b")}
    out = equalize_sizes(sets, seed=0)
    assert out["a"].height == out["b"].height == 6
    roots_b = set(out["b"]["root_id"])
    assert {f"r{i}" for i in range(5)} <= roots_b  # every shared root kept
    assert out["b"].equals(equalize_sizes(sets, seed=0)["b"])
    extra = {frozenset(equalize_sizes(sets, seed=s)["b"]["root_id"]) - {f"r{i}" for i in range(5)} for s in range(12)}
    assert len(extra) > 1  # the filler depends on the seed
    assert equalize_sizes({}, seed=0) == {}


# ----------------------------------------------------------------------------- settings + stage


def test_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['rounds'\]; allowed: method"):
        EvolSettings.from_dict({"rounds": 3})
    with pytest.raises(ValueError, match="evolve.method"):
        EvolSettings.from_dict({"method": "magic", "seed": 0})
    with pytest.raises(ValueError, match="evolve.operations"):
        EvolSettings.from_dict({"method": "evol_instruct", "seed": 0, "operations": ["deepen", "nope"]})
    with pytest.raises(ValueError, match="evolve.operations: only method evol_instruct"):
        EvolSettings.from_dict({"method": "auto_evol", "seed": 0, "operations": ["deepen"]})
    with pytest.raises(ValueError, match=r"evolve: missing key\(s\) \['seed'\]"):
        EvolSettings.from_dict({"method": "auto_evol"})
    with pytest.raises(ValueError, match="generation: unknown key"):
        EvolverGeneration.from_dict({"temp": 1.0})
    with pytest.raises(ValueError, match=r"generation: missing key\(s\) \['prompt_format', 'max_new_tokens'"):
        EvolverGeneration.from_dict({})


def test_settings_take_the_config_sections():
    """The rules pass the schema's sections minus the plan keys (teachfit.plan.scenario_settings)."""
    from teachfit.config import defaults
    from teachfit.plan import scenario_settings

    evol = scenario_settings(defaults("evolver.scenarios.evol_instruct"))
    assert evol == {"operations": list(OPERATIONS)}
    cfg = EvolSettings.from_dict({"method": "evol_instruct", "seed": 3, **evol})
    assert cfg.operations == list(OPERATIONS) and cfg.seed == 3
    auto = scenario_settings(defaults("evolver.scenarios.auto_evol"))
    assert auto == {} and EvolSettings.from_dict({"method": "auto_evol", "seed": 0, **auto}).operations is None


class FakeGenerateFn:
    """``make_generate_fn`` stand-in: :func:`fake_evolver` plus one top-1 log-prob list per prompt."""

    def __init__(self):
        self.top1: list[list[float]] = []

    def __call__(self, prompts: list[str]) -> list[str]:
        self.top1.extend([math.log(0.5), 0.0] for _ in prompts)
        return fake_evolver(prompts)


def _evolve_params(scenario: str = "evol_instruct", seed: int = 3) -> dict:
    """The rule's params as the workflow builds them (schema defaults, tiny engine)."""
    from teachfit.config import defaults
    from teachfit.generation.engines import backend_settings
    from teachfit.plan import scenario_settings

    return {"scenario": scenario, "evolver": "tiny", "round": 1,
            "settings": scenario_settings(defaults(f"evolver.scenarios.{scenario}")),
            "max_new_tokens": 64, "prompt_format": "chat",
            "backend": backend_settings(defaults("models.*", source="random"), defaults("generation")),
            "seed": seed}


def test_evolve_instructions_writes_table_and_reports(tmp_path, records, monkeypatch):
    """The workflow's round (``teachfit.studies.evolver.evolve.evolve_instructions``) with a fake evolver."""
    import teachfit.studies.evolver.evolve
    from teachfit.studies.evolver.evolve import evolve_instructions

    made = []

    def fake_make_generate_fn(model_dir, generation, backend, threads=None, desc=""):
        made.append((str(model_dir), generation, dict(backend), threads, desc))
        return FakeGenerateFn()

    monkeypatch.setattr(teachfit.studies.evolver.evolve, "make_generate_fn", fake_make_generate_fn)
    records.write_parquet(tmp_path / "in.parquet")
    params = _evolve_params()
    out = tmp_path / "out.parquet"
    kept = evolve_instructions(tmp_path / "in.parquet", "unused", out, tmp_path / "report.json",
                               tmp_path / "top1.parquet", threads=2, **params)
    assert pl.read_parquet(out)["id"].to_list() == kept["id"].to_list()
    assert set(kept["scenario"]) == {"evol_instruct"} and set(kept["evolver"]) == {"tiny"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["kept"] == 3 and report["dropped"]["refusal"] == 1 and report["input_rows"] == 8
    assert sum(report["operations"].values()) == 3
    # evolvers decode greedily with top-1 log-probs; the engine is the model entry's backend
    model_dir, generation, backend, threads, _ = made[0]
    assert model_dir == "unused" and threads == 2 and backend == params["backend"]
    assert (generation.temperature, generation.logprobs, generation.max_new_tokens, generation.seed) == (0.0, True, 64, 3)
    top1 = pl.read_parquet(tmp_path / "top1.parquet")
    assert top1["parent_id"].to_list() == records["id"].to_list()
    assert top1["top1_logprobs"].to_list() == [[math.log(0.5), 0.0]] * records.height
    assert top1["round"].to_list() == [1] * records.height

    evolve_instructions(tmp_path / "in.parquet", "unused", tmp_path / "auto.parquet", tmp_path / "r2.json",
                        tmp_path / "t2.parquet", **_evolve_params("auto_evol"))
    assert set(pl.read_parquet(tmp_path / "auto.parquet")["operation"]) == {"auto_evol"}
    assert pl.read_parquet(tmp_path / "t2.parquet").height == records.height


class _Completion:
    def __init__(self, text):
        self.text, self.token_ids, self.finish_reason = text, [1], "stop"
        self.top1_logprobs = [math.log(0.5), 0.0]


def test_backend_glue_uses_the_generation_api(monkeypatch):
    """make_generate_fn against the declared teachfit.generation / teachfit.prompts API (faked here,
    so this test does not depend on those modules)."""
    seen = {}

    class Backend:
        def generate(self, prompts, sampling, desc=""):
            seen["prompts"], seen["sampling"], seen["desc"] = prompts, sampling, desc
            return [[_Completion(f"out:{p}")] for p in prompts]

    def SamplingConfig(**kw):  # mirrors the dataclass
        return types.SimpleNamespace(**kw)

    class BackendConfig:
        def __init__(self, d):
            self.backend = d["backend"]
            seen["backend_config"] = d

        @classmethod
        def from_dict(cls, d):
            return cls(d)

        def build(self, model_dir, threads=None, seed=0):
            seen["build"] = (model_dir, threads, seed)
            return Backend()

    base_mod = types.ModuleType("teachfit.generation.base")
    base_mod.SamplingConfig = SamplingConfig
    engines_mod = types.ModuleType("teachfit.generation.engines")
    engines_mod.BackendConfig = BackendConfig
    prompts_mod = types.ModuleType("teachfit.prompts")
    prompts_mod.format_prompt = lambda tok, ins, fmt="chat", system=None, fewshot=(): f"[{fmt}|{system}]{ins}"
    prompts_mod.stop_strings = lambda fmt, extra=(): ["STOP"] if fmt == "fewshot" else []
    monkeypatch.setitem(sys.modules, "teachfit.generation.base", base_mod)
    monkeypatch.setitem(sys.modules, "teachfit.generation.engines", engines_mod)
    monkeypatch.setitem(sys.modules, "teachfit.prompts", prompts_mod)
    monkeypatch.setattr("teachfit.models.load_tokenizer", lambda d: "TOK")
    gen = {"prompt_format": "chat", "temperature": 0.3, "system": "sys", "logprobs": True, "max_new_tokens": 64,
           "seed": 5}
    fn = make_generate_fn("m", gen, {"backend": "vllm", "tensor_parallel_size": 2}, threads=3)
    assert fn(["a", "b"]) == ["out:[chat|sys]a", "out:[chat|sys]b"]
    s = seen["sampling"]
    assert (s.temperature, s.n, s.max_new_tokens, s.stop, s.logprobs, s.seed) == (0.3, 1, 64, [], True, 5)
    assert seen["backend_config"] == {"backend": "vllm", "tensor_parallel_size": 2}
    assert seen["build"] == ("m", 3, 5)
    assert fn.top1 == [[math.log(0.5), 0.0]] * 2 and fn.supports_primer
    assert fn(["c"], primer="Step 1:") == ["out:[chat|sys]cStep 1:"]
    fn = make_generate_fn("m", {**gen, "prompt_format": "fewshot", "system": None}, Backend())
    assert fn(["q"]) == ["out:[fewshot|None]q"] and seen["sampling"].stop == ["STOP"]


def test_openai_evolver_sends_chat_text_without_primer(monkeypatch):
    """An ``openai`` evolver runs through the OpenAI backend (no silent swap to transformers):
    the prompt text goes out as the user message, no tokenizer is loaded, and priming the
    reply (Auto Evol-Instruct's small-model aid) is off."""
    import teachfit.models
    from teachfit.studies.evolver.evolve import auto_evol_round, build_auto_evol_prompt

    monkeypatch.setattr(teachfit.models, "load_tokenizer", lambda d: pytest.fail("api evolver loads no tokenizer"))
    sent = []

    class OpenAIBackend:
        name = "openai"

        def generate(self, prompts, sampling, desc=""):
            sent.extend(prompts)
            return [[_Completion("Step 4 #Finally Rewritten Instruction#:\nList three rainy-day games for kids.")]
                    for _ in prompts]

    gen = {"prompt_format": "chat", "max_new_tokens": 32, "seed": 0}
    fn = make_generate_fn("results/models/gpt4", gen, OpenAIBackend())
    assert not fn.supports_primer
    records = pl.DataFrame({"id": ["a"], "instruction": ["List games."]})
    kept, _ = auto_evol_round(records, fn, seed=0, round=1, evolver="gpt4")
    assert sent == [build_auto_evol_prompt("List games.")]
    assert kept["instruction"].to_list() == ["List three rainy-day games for kids."]
    assert fn.top1 == [[math.log(0.5), 0.0]]
    with pytest.raises(ValueError, match="gpt4: an OpenAI-compatible endpoint cannot prime"):
        fn(["x"], primer="Step 1")
    with pytest.raises(ValueError, match="gpt4: an OpenAI-compatible endpoint takes chat text"):
        make_generate_fn("results/models/gpt4", {**gen, "prompt_format": "fewshot"}, OpenAIBackend())
    # the engine comes from the model entry: backend 'openai' builds the OpenAI backend
    from teachfit.config import defaults
    from teachfit.generation.engines import backend_settings

    entry = defaults("models.*", source="api", backend="openai", api_base="http://127.0.0.1:9/v1", api_model="m")
    fn = make_generate_fn("results/models/gpt4", gen, backend_settings(entry, defaults("generation")))
    assert fn.api and fn.backend.name == "openai"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from teachfit.models import materialize

    out = tmp_path_factory.mktemp("models") / "llama"
    materialize("tiny", {"source": "random", "arch": "llama"}, out)
    return out


def test_evolve_round_with_a_real_tiny_model(tiny_llama):
    """End to end through teachfit.generation (skipped where that module is absent)."""
    pytest.importorskip("teachfit.generation.hf")
    records = pl.DataFrame({"id": ["a", "b", "c"], "instruction": ["Explain rain.", "List two colours.", "Add 2 and 3."]})
    from teachfit.config import defaults
    from teachfit.generation.engines import backend_settings

    backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
    gen = {"prompt_format": "chat", "max_new_tokens": 12, "seed": 0}
    fn = make_generate_fn(tiny_llama, gen, backend)
    kept, counts = evolve_round(records, fn, OPERATIONS, seed=0, round=1, evolver="tiny")
    assert kept.height + sum(counts.values()) == 3
    assert len(fn.top1) == 3 and all(0 < len(t) <= 12 for t in fn.top1)
    again, _ = evolve_round(records, make_generate_fn(tiny_llama, {**gen, "logprobs": False}, backend),
                            OPERATIONS, seed=0, round=1, evolver="tiny")
    assert again["instruction"].to_list() == kept["instruction"].to_list()  # greedy: reproducible


@pytest.mark.parametrize("reply, expected", [
    # shapes seen from SmolLM2-135M-Instruct (manual run); the quote was left over after cutting chatter
    ('"The sky looks blue during the day and red at dusk; explain both.\n\nThis rewritten instruction is easier.',
     "The sky looks blue during the day and red at dusk; explain both."),
    ('Write a poem that quotes "The Raven".', 'Write a poem that quotes "The Raven".'),
])
def test_parse_evolved_unbalanced_quotes(reply, expected):
    assert parse_evolved(reply) == expected


@pytest.mark.parametrize("reply", [
    "How to make it harder this time: ask about it in more depth.\n\n#Instruction#:\nStay focused.",
    "I will rewrite the instructions into a harder version, replacing general ideas.",
    "Planets in order from the Sun.\n\nRewritten Instruction#:\n- Rewrite the given instructions again.",
])
def test_echoed_prompt_or_narration_is_unparseable(reply):
    assert classify_failure("List the planets.", reply) == "unparseable"


# ----------------------------------------------------------------------------- plan + tables


def _plan_config(**evolver):
    from teachfit.config import validate_config

    cfg = {
        "models": {"inst": {"source": "random", "kind": "instruct"}, "base": {"source": "random", "kind": "base"},
                   "enc": {"source": "random", "kind": "encoder", "task": "encoder"},
                   "rm": {"source": "random", "kind": "reward", "task": "seq_cls"}},
        "seedsets": {"s": {"path": "x.jsonl"}, "t": {"path": "y.jsonl"}},
        "generators": {"g": {"model": "inst"}},
        "teacher": {"activate": True, "instructions": "t", "generators": ["g"], "bases": ["base"],
                    "reference_model": "inst", "reward": {"type": "classifier", "model": "rm"}},
        "evolver": {"activate": True, "seedsets": ["s"], "evolvers": ["inst", "base"], "teacher": "g",
                    "bases": ["base"], "judge": "inst", "embedding_model": "enc", "scoring_model": "inst",
                    "scenarios": {"evol_instruct": {"rounds": 2}, "auto_evol": {"evolvers": ["inst"]}},
                    "selection": {"evolvers": ["inst"], "methods": ["random"]}, **evolver},
    }
    return validate_config(cfg)


def test_plan_owns_the_evolved_sets_metadata_and_reward():
    from teachfit.plan import PlanError, build_plan

    plan = build_plan(_plan_config())
    assert plan.evolved_datasets() == ["s-evol_instruct-inst", "s-evol_instruct-base", "s-auto_evol-inst"]
    assert plan.evolved_origin("s-auto_evol-inst") == {"seedset": "s", "scenario": "auto_evol", "evolver": "inst"}
    with pytest.raises(PlanError, match="'t' is not an evolved data set"):
        plan.evolved_origin("t")
    assert plan.evolution_rounds("s", "evol_instruct") == [
        {"seedset": "s", "scenario": "evol_instruct", "evolver": ev, "round": k}
        for ev in ("inst", "base") for k in (1, 2)]
    assert [r["scenario"] for r in plan.evolution_rounds(top1=True)] == ["evol_instruct"] * 4 + ["auto_evol"]
    assert plan.evolution_settings("evol_instruct") == {"operations": list(OPERATIONS)}
    # each study its own reward model: the evolver's (default: its judge) for evolved sets
    assert plan.reward_settings("s-evol_instruct-base") == {"type": "judge", "model": "inst", "batch_size": 8,
                                                            "version": 1}
    assert plan.reward_model("t") == "rm" and plan.reward_model("s-auto_evol-inst") == "inst"
    plan = build_plan(_plan_config(reward={"type": "classifier", "model": "rm", "batch_size": 2}))
    assert plan.reward_settings("s-auto_evol-inst") == {"type": "classifier", "model": "rm", "batch_size": 2,
                                                        "version": 1}
    off = _plan_config()
    off["teacher"]["activate"] = False
    assert build_plan(off).reward_model("t") == "inst"  # only the evolver study rates anything
    off["evolver"]["activate"] = False
    with pytest.raises(PlanError, match="no reward model rates data set 't'"):
        build_plan(off).reward_model("t")


def test_evolver_reward_model_is_checked():
    from teachfit.config import ConfigError

    with pytest.raises(ConfigError, match="evolver.reward.model: type 'classifier' needs a reward model"):
        _plan_config(reward={"type": "classifier"})
    with pytest.raises(ConfigError, match="evolver.reward.model: model 'inst' is kind 'instruct'"):
        _plan_config(reward={"type": "classifier", "model": "inst"})


def test_plan_lists_the_runs_each_evolver_table_compares():
    from teachfit.plan import build_plan

    plan = build_plan(_plan_config())
    comparison = plan.evolver_runs("comparison")
    assert [(r["scenario"], r["evolver"], r["selection"]) for r in comparison] == [
        ("auto_evol", "inst", "full"), ("evol_instruct", "base", "full"), ("evol_instruct", "inst", "full")]
    assert comparison[0] == {"dataset": "s-auto_evol-inst", "seedset": "s", "scenario": "auto_evol",
                             "evolver": "inst", "generator": "g", "selection": "full", "base": "base"}
    selection = plan.evolver_runs("selection")
    # the selected subsets first, then the full sets they were selected from
    assert [(r["evolver"], r["selection"]) for r in selection] == [("inst", "random50"), ("inst", "full")]
    assert all(r["scenario"] == "evol_instruct" for r in selection)


def _eval(path, values):
    pl.DataFrame({"task": ["tf_ifeval", "tf_arith", "tf_arith"],
                  "metric": ["prompt_level_loose_acc,none", "exact_match,flexible-extract", "x"],
                  "value": values, "is_final": [True, True, False]}).write_parquet(path)
    return str(path)


def test_build_evolver_tables_reads_declared_inputs_and_metadata(tmp_path):
    """Metadata of every file comes as aligned params (no path parsing); top-1 files are inputs."""
    from teachfit.config import defaults
    from teachfit.studies.evolver.tables import build_evolver_tables

    runs = [{"dataset": "a-b-c", "seedset": "general", "scenario": "evol_instruct", "evolver": e,
             "generator": "g", "selection": "full", "base": "base"} for e in ("small", "large")]
    evals = [_eval(tmp_path / f"e{i}.parquet", [v, 0.5, 9.0]) for i, v in enumerate((0.25, 0.75))]
    stats = tmp_path / "stats.parquet"
    pl.DataFrame({"id": ["x", "y"], "seedset": ["general"] * 2, "scenario": ["evol_instruct"] * 2,
                  "evolver": ["small", "large"], "round": [1, 1], "length_words": [3, 5],
                  "difficulty": [2.0, 3.0], "nn_distance": [0.1, 0.2], "reward": [1.0, None]}).write_parquet(stats)
    drops = tmp_path / "drops.parquet"
    pl.DataFrame({"evolver": ["small", "small", "large", "small"], "scenario": ["evol_instruct"] * 4,
                  "round": [1, 1, 1, 0], "reason": ["kept", "copy", "kept", "equalized_away"],
                  "count": [4, 1, 3, 1]}).write_parquet(drops)
    top1 = []
    for i in range(2):
        p = tmp_path / f"t{i}.parquet"
        pl.DataFrame({"parent_id": ["x"], "top1_logprobs": [[math.log(0.5), 0.0]]}).write_parquet(p)
        top1.append(str(p))
    rounds = [{"seedset": "general", "scenario": "evol_instruct", "evolver": e, "round": 1} for e in ("small", "large")]
    out = {k: tmp_path / f"{k}.csv" for k in ("comparison_table", "stats_table", "selection_table", "top1_table")}
    build_evolver_tables([str(stats)], [str(drops)], evals, [], top1, **out, comparison_runs=runs,
                         selection_runs=[], top1_rounds=rounds, performance=defaults("performance"))
    comp = pl.read_csv(out["comparison_table"])
    assert comp["evolver"].to_list() == ["large", "small"] and comp["average"].to_list() == [0.625, 0.375]
    assert comp.columns[:6] == ["seedset", "scenario", "evolver", "teacher", "selection", "base"]
    table = pl.read_csv(out["stats_table"])
    assert table.filter(pl.col("evolver") == "small")[["n_kept", "n_copy", "n_dropped", "n_trained"]].row(0) == (
        4, 1, 1, 1)
    t1 = pl.read_csv(out["top1_table"])
    assert t1[["evolver", "scenario", "round"]].rows() == [("small", "evol_instruct", 1), ("large", "evol_instruct", 1)]
    assert t1["mean"].to_list() == [0.75, 0.75]
    assert out["selection_table"].read_text().strip() == ""  # no selection runs
    with pytest.raises(DataError, match="top1_rounds: 2 files but 1 metadata entries"):
        build_evolver_tables([str(stats)], [str(drops)], evals, [], top1, **out, comparison_runs=runs,
                             selection_runs=[], top1_rounds=rounds[:1], performance=defaults("performance"))
