from __future__ import annotations

import math
import types
from collections import Counter

import polars as pl
import pytest

from teachfit.io import DataError, content_id
from teachfit.studies.evolver.evolve import (
    OPERATIONS,
    REPLY_COLUMNS,
    EvolSettings,
    EvolverGeneration,
    assign_operations,
    auto_evol_round,
    build_auto_evol_prompt,
    build_evol_prompt,
    evolve_round,
    make_generate_fn,
    parse_auto_evol,
    parse_evolved,
)
from teachfit.studies.evolver.gate import gate_replies
from teachfit.studies.evolver.gate_checks import GateSettings, classify_failure, is_copy
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
    assert classify_failure(ORIG, reply.split("Step 4")[0], scenario="auto_evol") == "unparseable"


@pytest.mark.parametrize("reply, reason", [
    ("", "empty"),
    ("   \n ", "empty"),
    (None, "empty"),
    ("I'm sorry, but I can't help with rewriting this.", "refusal"),
    ("#Rewritten Instruction#:\nAs an AI language model I cannot write poems.", "refusal"),
    ("Sorry, I am unable to do that.", "refusal"),
    ("#Rewritten Instruction#:\n", "empty"),
    ("#Rewritten Instruction#:\nRewrite the given prompt so that it is harder.", "prompt_copy"),
    ("#Instruction#: Write a haiku about winter. #Rewritten Instruction#: x #Instruction# y", "prompt_copy"),
    (f"#Rewritten Instruction#:\n{ORIG}", "no_gain"),
    ("#Rewritten Instruction#:\nwrite a HAIKU about winter!!", "no_gain"),
    ("#Rewritten Instruction#:\nWrite one haiku about winter.", "no_gain"),  # near copy: one new word
    ("#Rewritten Instruction#:\n" + "Write a very long haiku. " * 300, "too_long"),
    (f"#Rewritten Instruction#:\n{GOOD}", None),
    ("Write an apology letter that starts with 'I am sorry for being late'.", None),
])
def test_classify_failure(reply, reason):
    assert classify_failure(ORIG, reply) == reason


def test_copy_thresholds_are_settings():
    assert is_copy(ORIG, "Write one haiku about winter.")
    assert not is_copy(ORIG, "Write one haiku about winter.", min_new_words=1)
    strict = GateSettings(checks=[], judge=False, threshold=0.5, version=1, max_chars=30)
    assert classify_failure(ORIG, f"#Rewritten Instruction#:\n{GOOD}", settings=strict) == "too_long"
    with pytest.raises(ValueError):
        GateSettings(checks=[], judge=False, threshold=0.5, version=1, copy_ratio=1.5)


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


DET = GateSettings.deterministic()


def test_evolve_round_returns_every_reply_with_lineage_and_the_gate_counts_drops(records):
    calls = []

    def gen(prompts):
        calls.append(len(prompts))
        return fake_evolver(prompts)

    replies = evolve_round(records, gen, OPERATIONS, seed=3, round=1, evolver="tiny")
    assert calls == [records.height]  # one batched call per round
    assert replies.columns == [*REPLY_COLUMNS, "seedset", "category"]
    assert replies["parent_id"].to_list() == records["id"].to_list() == replies["root_id"].to_list()
    assert replies["parent"].to_list() == records["instruction"].to_list()
    ops = assign_operations(records["id"].to_list(), OPERATIONS, 3, 1)
    assert replies["operation"].to_list() == ops
    assert replies["prompt"].to_list() == [build_evol_prompt(t, op) for t, op in zip(records["instruction"], ops)]
    kept, verdicts = gate_replies(replies, "evol_instruct", DET)
    assert Counter(r for r in verdicts["reason"] if r) == {"empty": 2, "refusal": 1, "no_gain": 1, "duplicate": 1}
    assert kept.height == 3 == records.height - verdicts["reason"].is_not_null().sum()
    assert kept.columns == ["id", "parent_id", "root_id", "round", "operation", "evolver", "instruction",
                            "seedset", "category", "scenario"]
    for row in kept.iter_rows(named=True):
        assert row["root_id"] == row["parent_id"] and row["round"] == 1 and row["evolver"] == "tiny"
        assert row["operation"] == dict(zip(records["id"], ops))[row["parent_id"]]
        assert row["id"] == content_id(row["parent_id"], row["operation"], 1, row["instruction"])
        assert not row["instruction"].startswith(("Sure", "#")) and "Explanation" not in row["instruction"]
    assert "Explain photosynthesis. Use at least two concrete examples." in kept["instruction"].to_list()
    # a second round chains on the first: root ids survive, parents are round-1 ids
    replies2 = evolve_round(kept, fake_evolver, OPERATIONS, seed=3, round=2, evolver="tiny")
    assert set(replies2["parent_id"]) == set(kept["id"]) and set(replies2["root_id"]) == set(kept["root_id"])
    assert replies2["round"].to_list() == [2] * kept.height
    # the fake repeats its sentence: nothing new over the round-1 parent, so the gate drops it
    _, v2 = gate_replies(replies2, "evol_instruct", DET)
    assert v2.height == kept.height
    assert set(v2["reason"].to_list()) <= {"no_gain", None}


def test_evolve_round_checks_its_inputs(records):
    with pytest.raises(ValueError, match="returned 1 outputs for 8 prompts"):
        evolve_round(records, lambda ps: ["x"], OPERATIONS, seed=0)
    with pytest.raises(DataError, match="lacks column"):
        evolve_round(records.drop("instruction"), fake_evolver, OPERATIONS, seed=0)
    with pytest.raises(DataError, match="not unique"):
        evolve_round(pl.concat([records, records]), fake_evolver, OPERATIONS, seed=0)
    replies = evolve_round(records.head(0), fake_evolver, OPERATIONS, seed=0)
    assert replies.height == 0 and "root_id" in replies.columns
    kept, verdicts = gate_replies(replies, "evol_instruct", DET)
    assert kept.height == verdicts.height == 0 and "root_id" in kept.columns


def test_auto_evol_round(records):
    replies = auto_evol_round(records, fake_evolver, seed=0, round=1, evolver="tiny")
    kept, verdicts = gate_replies(replies, "auto_evol", DET)
    counts = Counter(r for r in verdicts["reason"] if r)
    # REFUSE / EMPTY / GARBLE / COPY / SAME replies carry no Step 4 section
    assert counts == {"refusal": 1, "empty": 1, "unparseable": 4}
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
    dec = {"temperature": 0.7, "top_p": 1.0}
    with pytest.raises(ValueError, match="evolve.method"):
        EvolSettings.from_dict({"method": "magic", "seed": 0, **dec})
    with pytest.raises(ValueError, match="evolve.operations"):
        EvolSettings.from_dict({"method": "evol_instruct", "seed": 0, "operations": ["deepen", "nope"], **dec})
    with pytest.raises(ValueError, match="evolve.operations: only method evol_instruct"):
        EvolSettings.from_dict({"method": "auto_evol", "seed": 0, "operations": ["deepen"], **dec})
    with pytest.raises(ValueError, match=r"evolve: missing key\(s\) \['seed', 'temperature', 'top_p'\]"):
        EvolSettings.from_dict({"method": "auto_evol"})
    with pytest.raises(ValueError, match="temperature >= 0 and 0 < top_p <= 1"):
        EvolSettings.from_dict({"method": "auto_evol", "seed": 0, "temperature": 0.7, "top_p": 0.0})
    with pytest.raises(ValueError, match="generation: unknown key"):
        EvolverGeneration.from_dict({"temp": 1.0})
    with pytest.raises(ValueError, match=r"generation: missing key\(s\) \['prompt_format', 'max_new_tokens'"):
        EvolverGeneration.from_dict({})


def test_settings_take_the_config_sections():
    """The rules pass the schema's sections minus the plan keys (teachfit.workflow.plan.scenario_settings)."""
    from teachfit.schema import defaults
    from teachfit.workflow.plan import scenario_settings

    evol = scenario_settings(defaults("evolver.scenarios.evol_instruct"))
    # the paper's decoding: Evol-Instruct at T=0.7 (README.md:28), Auto Evol at T=0.7, top_p=0.95
    assert evol == {"operations": list(OPERATIONS), "temperature": 0.7, "top_p": 1.0}
    cfg = EvolSettings.from_dict({"method": "evol_instruct", "seed": 3, **evol})
    assert cfg.operations == list(OPERATIONS) and cfg.seed == 3 and (cfg.temperature, cfg.top_p) == (0.7, 1.0)
    auto = scenario_settings(defaults("evolver.scenarios.auto_evol"))
    assert auto == {"temperature": 0.7, "top_p": 0.95}
    cfg = EvolSettings.from_dict({"method": "auto_evol", "seed": 0, **auto})
    assert cfg.operations is None and (cfg.temperature, cfg.top_p) == (0.7, 0.95)


class FakeGenerateFn:
    """``make_generate_fn`` stand-in: :func:`fake_evolver` plus top-1 log-probs per prompt (sampled:
    ``[log 0.5, 0]``; greedy: ``log 0.9`` per allowed token), and the greedy pass's ``with_settings``."""

    def __init__(self, settings):
        self.settings, self.desc, self.top1, self.prompts = settings, "fake", [], []
        self.greedy: list[FakeGenerateFn] = []

    def with_settings(self, settings, desc=None):
        other = FakeGenerateFn(settings)
        self.greedy.append(other)
        return other

    def __call__(self, prompts: list[str]) -> list[str]:
        self.prompts += prompts
        greedy = self.settings.temperature == 0
        self.top1.extend([math.log(0.9)] * self.settings.max_new_tokens if greedy else [math.log(0.5), 0.0]
                         for _ in prompts)
        return fake_evolver(prompts)


def _evolve_params(scenario: str = "evol_instruct", seed: int = 3) -> dict:
    """The rule's params as the workflow builds them (schema defaults, tiny engine)."""
    from teachfit.schema import defaults
    from teachfit.generation.engines import backend_settings
    from teachfit.workflow.plan import scenario_settings

    return {"scenario": scenario, "evolver": "tiny", "round": 1,
            "settings": scenario_settings(defaults(f"evolver.scenarios.{scenario}")),
            "max_new_tokens": 64, "prompt_format": "chat",
            "backend": backend_settings(defaults("models.*", source="random"), defaults("generation")),
            "seed": seed}


def test_evolve_instructions_samples_then_runs_a_greedy_output_space_pass(tmp_path, records, monkeypatch):
    """The workflow's round (``evolve_instructions``) with a fake evolver: evolution decodes as the
    paper ran it (sampled, seeded), and a separate greedy pass over the same prompts records the
    top-1 log-probs of the first 5 tokens (Evol_Instruct/get_response_prob.py)."""
    import teachfit.studies.evolver.evolve
    from teachfit.studies.evolver.evolve import evolve_instructions

    made = []

    def fake_make_generate_fn(model_dir, generation, backend, threads=None, desc=""):
        fn = FakeGenerateFn(generation)
        made.append((str(model_dir), generation, dict(backend), threads, fn))
        return fn

    monkeypatch.setattr(teachfit.studies.evolver.evolve, "make_generate_fn", fake_make_generate_fn)
    records.write_parquet(tmp_path / "in.parquet")
    params = _evolve_params()
    out = tmp_path / "replies.parquet"
    replies = evolve_instructions(tmp_path / "in.parquet", "unused", out, tmp_path / "top1.parquet", threads=2,
                                  **params)
    assert pl.read_parquet(out).equals(replies) and replies.height == records.height
    assert set(replies["scenario"]) == {"evol_instruct"} and set(replies["evolver"]) == {"tiny"}
    model_dir, generation, backend, threads, fn = made[0]
    assert model_dir == "unused" and threads == 2 and backend == params["backend"]
    assert (generation.temperature, generation.top_p, generation.logprobs, generation.max_new_tokens,
            generation.seed) == (0.7, 1.0, True, 64, 3)
    # the output-space pass: same prompts, same engine, greedy, 5 new tokens
    (greedy,) = fn.greedy
    assert (greedy.settings.temperature, greedy.settings.max_new_tokens, greedy.settings.logprobs) == (0.0, 5, True)
    assert greedy.prompts == fn.prompts == replies["prompt"].to_list()
    top1 = pl.read_parquet(tmp_path / "top1.parquet")
    assert top1["parent_id"].to_list() == records["id"].to_list()
    assert top1["top1_logprobs"].to_list() == [[math.log(0.5), 0.0]] * records.height
    assert top1["first_top1_logprobs"].to_list() == [[math.log(0.9)] * 5] * records.height
    assert top1["round"].to_list() == [1] * records.height

    replies = evolve_instructions(tmp_path / "in.parquet", "unused", tmp_path / "auto.parquet", tmp_path / "t2.parquet",
                                  **_evolve_params("auto_evol"))
    assert set(replies["operation"]) == {"auto_evol"}
    generation = made[1][1]
    assert (generation.temperature, generation.top_p) == (0.7, 0.95)
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

    evolve = "teachfit.studies.evolver.evolve"
    monkeypatch.setattr(f"{evolve}.SamplingConfig", SamplingConfig)
    monkeypatch.setattr(f"{evolve}.BackendConfig", BackendConfig)
    monkeypatch.setattr(f"{evolve}.format_prompt",
                        lambda tok, ins, fmt="chat", system=None, fewshot=(): f"[{fmt}|{system}]{ins}")
    monkeypatch.setattr(f"{evolve}.stop_strings", lambda fmt, extra=(): ["STOP"] if fmt == "fewshot" else [])
    monkeypatch.setattr(f"{evolve}.load_tokenizer", lambda d: "TOK")
    gen = {"prompt_format": "chat", "temperature": 0.3, "top_p": 0.9, "system": "sys", "logprobs": True,
           "max_new_tokens": 64, "seed": 5}
    fn = make_generate_fn("m", gen, {"backend": "vllm", "tensor_parallel_size": 2}, threads=3)
    assert fn(["a", "b"]) == ["out:[chat|sys]a", "out:[chat|sys]b"]
    s = seen["sampling"]
    assert (s.temperature, s.top_p, s.n, s.max_new_tokens, s.stop, s.logprobs, s.seed) == (0.3, 0.9, 1, 64, [], True, 5)
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
    from teachfit.studies.evolver.evolve import auto_evol_round, build_auto_evol_prompt

    monkeypatch.setattr("teachfit.studies.evolver.evolve.load_tokenizer",
                        lambda d: pytest.fail("api evolver loads no tokenizer"))
    sent = []

    class OpenAIBackend:
        name = "openai"

        def generate(self, prompts, sampling, desc=""):
            sent.extend(prompts)
            return [[_Completion("Step 4 #Finally Rewritten Instruction#:\nList three rainy-day games for kids.")]
                    for _ in prompts]

    gen = {"prompt_format": "chat", "max_new_tokens": 32, "seed": 0, "temperature": 0.7, "top_p": 0.95}
    fn = make_generate_fn("results/models/gpt4", gen, OpenAIBackend())
    assert not fn.supports_primer
    records = pl.DataFrame({"id": ["a"], "instruction": ["List games."]})
    replies = auto_evol_round(records, fn, seed=0, round=1, evolver="gpt4")
    assert sent == [build_auto_evol_prompt("List games.")]
    kept, _ = gate_replies(replies, "auto_evol", DET)
    assert kept["instruction"].to_list() == ["List three rainy-day games for kids."]
    assert fn.top1 == [[math.log(0.5), 0.0]]
    with pytest.raises(ValueError, match="gpt4: an OpenAI-compatible endpoint cannot prime"):
        fn(["x"], primer="Step 1")
    with pytest.raises(ValueError, match="gpt4: an OpenAI-compatible endpoint takes chat text"):
        make_generate_fn("results/models/gpt4", {**gen, "prompt_format": "fewshot"}, OpenAIBackend())
    # the engine comes from the model entry: backend 'openai' builds the OpenAI backend
    from teachfit.schema import defaults
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
    """End to end through teachfit.generation: greedy is reproducible, sampling is seeded, and the
    output-space pass runs greedily on the same engine with at most 5 new tokens."""
    pytest.importorskip("teachfit.generation.hf")
    from teachfit.studies.evolver.evolve import output_space_pass

    records = pl.DataFrame({"id": ["a", "b", "c"], "instruction": ["Explain rain.", "List two colours.", "Add 2 and 3."]})
    from teachfit.schema import defaults
    from teachfit.generation.engines import backend_settings

    backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
    gen = {"prompt_format": "chat", "max_new_tokens": 12, "seed": 0, "temperature": 0.0, "top_p": 1.0}
    fn = make_generate_fn(tiny_llama, gen, backend)
    replies = evolve_round(records, fn, OPERATIONS, seed=0, round=1, evolver="tiny")
    assert replies.height == 3 and replies["reply"].null_count() == 0
    assert len(fn.top1) == 3 and all(0 < len(t) <= 12 for t in fn.top1)
    again = evolve_round(records, make_generate_fn(tiny_llama, {**gen, "logprobs": False}, backend),
                         OPERATIONS, seed=0, round=1, evolver="tiny")
    assert again["reply"].to_list() == replies["reply"].to_list()  # greedy: reproducible
    first = output_space_pass(fn, replies["prompt"].to_list())
    assert [len(t) for t in first] == [min(5, len(t)) for t in fn.top1]
    assert first == [t[:5] for t in fn.top1]  # greedy steps do not depend on the length cap
    sampled = {**gen, "temperature": 0.7, "top_p": 0.95}
    a = evolve_round(records, make_generate_fn(tiny_llama, sampled, backend), OPERATIONS, seed=0, evolver="tiny")
    b = evolve_round(records, make_generate_fn(tiny_llama, sampled, backend), OPERATIONS, seed=0, evolver="tiny")
    assert a["reply"].to_list() == b["reply"].to_list()  # seeded sampling
    c = evolve_round(records, make_generate_fn(tiny_llama, {**sampled, "seed": 1}, backend), OPERATIONS, seed=0,
                     evolver="tiny")
    assert c["reply"].to_list() != a["reply"].to_list()


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
def test_echoed_prompt_or_narration_is_a_prompt_copy(reply):
    assert classify_failure("List the planets.", reply) == "prompt_copy"


# ----------------------------------------------------------------------------- plan + tables


def _plan_config(**evolver):
    from teachfit.workflow.config import validate_config

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
    from teachfit.workflow.plan import PlanError, build_plan

    plan = build_plan(_plan_config())
    assert plan.evolved_datasets() == ["s-evol_instruct-inst", "s-evol_instruct-base", "s-auto_evol-inst"]
    assert plan.evolved_origin("s-auto_evol-inst") == {"seedset": "s", "scenario": "auto_evol", "evolver": "inst"}
    with pytest.raises(PlanError, match="'t' is not an evolved data set"):
        plan.evolved_origin("t")
    assert plan.evolution_rounds("s", "evol_instruct") == [
        {"seedset": "s", "scenario": "evol_instruct", "evolver": ev, "round": k}
        for ev in ("inst", "base") for k in (1, 2)]
    assert [r["scenario"] for r in plan.evolution_rounds(top1=True)] == ["evol_instruct"] * 4 + ["auto_evol"]
    assert plan.evolution_settings("evol_instruct") == {"operations": list(OPERATIONS), "temperature": 0.7,
                                                        "top_p": 1.0}
    assert plan.evolver_pools() == [f"{d}-pool" for d in plan.evolved_datasets()]
    assert plan.reward_settings("s-evol_instruct-base-pool") == plan.reward_settings("s-evol_instruct-base")
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
    from teachfit.schema import ConfigError

    with pytest.raises(ConfigError, match="evolver.reward.model: type 'classifier' needs a reward model"):
        _plan_config(reward={"type": "classifier"})
    with pytest.raises(ConfigError, match="evolver.reward.model: model 'inst' is kind 'instruct'"):
        _plan_config(reward={"type": "classifier", "model": "inst"})


def test_plan_lists_the_runs_each_evolver_table_compares():
    from teachfit.workflow.plan import build_plan

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
