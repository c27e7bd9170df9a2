"""AutoIF with an evolver model (scenario 3 of Hui et al. 2024; method of Dong et al. 2024).

Steps, each with its failures counted by reason:

(a) **propose** -- the evolver sees a sample of seed verifiable instructions
    ("Answer in fewer than 50 words.") and writes new ones, one per line
    (:func:`build_proposal_prompt`, :func:`parse_instruction_list`);
(b) **verifiers** -- for every instruction the evolver writes a Python
    ``evaluate(response: str) -> bool`` and test cases (responses with the
    expected verdict) in a fixed layout (:func:`build_verifier_prompt`,
    :func:`parse_verifier`);
(c) **cross-validate** -- every function runs on every test case of its
    instruction *in the sandbox* (:mod:`teachfit.studies.evolver.sandbox`); functions whose
    accuracy is at least ``accuracy_threshold`` survive, and instructions with
    at least one surviving function survive;
(d) **pair** -- seed queries are paired with surviving instructions into new
    instructions ``query + " " + instruction`` with their lineage and the
    surviving verifier code.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, content_id, read_table, write_json, write_parquet
from teachfit.studies.evolver.evolve import (
    EvolverGeneration,
    GenerateFn,
    _from_dict,
    make_generate_fn,
)
from teachfit.studies.evolver.gate_checks import is_refusal, normalize_text
from teachfit.studies.evolver.sandbox import SandboxJob, SandboxSettings, run_many

log = logging.getLogger(__name__)

AUTOIF_OPERATION = "autoif"

PROPOSE_REASONS = ("empty", "refusal", "unparseable", "too_long", "duplicate", "seed_copy", "over_limit")
VERIFIER_REASONS = ("empty", "no_function", "no_cases", "duplicate_function")
FUNCTION_REASONS = ("low_accuracy", "non_bool", "syntax", "missing_function", "timeout", "memory",
                    "blocked", "error", "killed", "crash", "unserializable", "output_too_large")
INSTRUCTION_REASONS = ("too_few_cases", "no_surviving_function")


# --------------------------------------------------------------------------- settings


@dataclass
class AutoIFSettings:
    """AutoIF settings: ``evolver.scenarios.autoif`` without the plan keys
    (:func:`teachfit.workflow.plan.scenario_settings`) plus the run ``seed``; those keys have no
    default here (the schema holds them). The other fields are constants of the method that
    no config sets (prompt counts, case counts, sandbox extras)."""

    seed: int = field(metadata={"help": "seed of example sampling and query pairing (the run seed)"})
    n_instructions: int = field(metadata={"help": "step (a): cap on kept new instructions"})
    functions_per_instruction: int = field(metadata={"help": "step (b): verifier samples per instruction"})
    accuracy_threshold: float = field(metadata={"help": "step (c): min function accuracy on the test cases"})
    queries_per_instruction: int | None = field(
        metadata={"help": "step (d): pair each instruction with this many queries (None: pairs_per_query "
                          "instructions per query instead)"},
    )
    timeout_s: float = field(metadata={"help": "sandbox: seconds per verifier call"})
    memory_mb: int = field(metadata={"help": "sandbox: memory limit (MiB)"})
    proposal_prompts: int = field(default=8, metadata={"help": "step (a): number of proposal prompts"})
    examples_per_prompt: int = field(default=6, metadata={"help": "step (a): seed instructions shown per prompt"})
    new_per_prompt: int = field(default=10, metadata={"help": "step (a): instructions asked for per prompt"})
    include_seed_instructions: bool = field(
        default=True, metadata={"help": "seed instructions also go through steps (b)-(d)"}
    )
    max_instruction_chars: int = field(default=300, metadata={"help": "step (a): longer proposals are dropped"})
    cases_per_prompt: int = field(default=6, metadata={"help": "step (b): test cases asked for per sample"})
    min_cases: int = field(default=3, metadata={"help": "step (c): instructions with fewer pooled cases drop"})
    pairs_per_query: int = field(default=1, metadata={"help": "step (d): instructions paired with each query"})
    max_pairs: int | None = field(default=None, metadata={"help": "step (d): cap on output rows (seeded)"})
    sandbox: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "other teachfit.studies.evolver.sandbox settings (workers, ...)"}
    )
    version: int = field(default=1, metadata={"help": "bump when prompts/parsing change"})

    def __post_init__(self) -> None:
        positive = ("proposal_prompts", "examples_per_prompt", "new_per_prompt", "n_instructions",
                    "max_instruction_chars", "functions_per_instruction", "cases_per_prompt",
                    "min_cases", "pairs_per_query")
        bad = [k for k in positive if getattr(self, k) < 1]
        if bad:
            raise ValueError(f"autoif: {bad} must be >= 1")
        if not 0 <= self.accuracy_threshold <= 1:
            raise ValueError(f"autoif.accuracy_threshold must be in [0, 1], got {self.accuracy_threshold}")
        for key in ("max_pairs", "queries_per_instruction"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"autoif.{key} must be >= 1 or null")
        clash = sorted({"timeout_s", "memory_mb"} & set(self.sandbox))
        if clash:
            raise ValueError(f"autoif.sandbox: set {clash} at autoif level (autoif.timeout_s / autoif.memory_mb)")
        self.sandbox_settings = SandboxSettings.from_dict(
            {**self.sandbox, "timeout_s": self.timeout_s, "memory_mb": self.memory_mb}
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> AutoIFSettings:
        """Raises ValueError naming unknown or missing keys (see the class docstring)."""
        return _from_dict(cls, d, "autoif")


def load_seed_instructions(path: str | Path) -> list[str]:
    """Seed verifiable instructions: one per line; blank lines and ``#`` comments skipped.

    The workflow passes ``evolver.scenarios.autoif.seed_instructions`` or the package's
    ``teachfit/data/autoif_seed_instructions.txt``. Raises DataError for a missing file or
    one without instructions.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: seed instruction file does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    out = list(dict.fromkeys(ln for ln in lines if ln and not ln.startswith("#")))
    if not out:
        raise DataError(f"{path}: no seed instructions (only blank or # lines)")
    return out


# --------------------------------------------------------------------------- (a) propose

_PROPOSE_TEMPLATE = (
    "We are collecting instructions about the *form* of an answer, each of which a short "
    "computer program can check just by reading the answer text. Examples:\n"
    "{examples}\n\n"
    "Write {k} new instructions of this kind. Each one should limit something a program can "
    "test: length in words or sentences, required or forbidden words, letters or punctuation, "
    "capitalization, number of paragraphs or bullet points, how the answer starts or ends, or "
    "a required format. Do not copy the examples, and do not write instructions about the "
    "topic, style or truth of an answer.\n"
    "Put one instruction per line, numbered 1., 2., 3., and write nothing else."
)
_ITEM_RE = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*•]|#\d+:?)\s+")


def build_proposal_prompt(examples: Sequence[str], k: int) -> str:
    """Step (a) prompt: ``examples`` (seed verifiable instructions) shown as a list, asking for
    ``k`` new ones, one per numbered line (reference code: ``AutoIF/1_RFT.py``)."""
    lines = "\n".join(f"- {e}" for e in examples)
    return _PROPOSE_TEMPLATE.format(examples=lines, k=k)


def parse_instruction_list(text: str | None) -> list[str]:
    """Numbered or bulleted lines of a reply, without their markers, quotes or bold.

    Only marked lines count (the prompt asks for a numbered list): unmarked
    lines are chatter ("Here are some…", "While I am an AI…"). Items ending
    with ``:`` are headers and skipped.
    """
    if not text or not text.strip():
        return []
    items = []
    for ln in text.splitlines():
        if not _ITEM_RE.match(ln):
            continue
        item = _ITEM_RE.sub("", ln, count=1).strip()
        item = item.strip("*_").strip()
        if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'":
            item = item[1:-1].strip()
        if not item or item.endswith(":"):
            continue
        items.append(item)
    return items


def propose_instructions(seed_instructions: Sequence[str], generate_fn: GenerateFn,
                         settings: AutoIFSettings) -> tuple[list[str], dict[str, int]]:
    """Step (a): new verifiable instructions (deduplicated, capped) and drop counts."""
    import random

    counts = {r: 0 for r in PROPOSE_REASONS}
    rng = random.Random(f"autoif-propose-{settings.seed}")
    k = min(settings.examples_per_prompt, len(seed_instructions))
    prompts = [build_proposal_prompt(rng.sample(list(seed_instructions), k), settings.new_per_prompt)
               for _ in range(settings.proposal_prompts)]
    replies = generate_fn(prompts)
    if len(replies) != len(prompts):
        raise ValueError(f"generate_fn returned {len(replies)} outputs for {len(prompts)} prompts")
    seen_seed = {normalize_text(s) for s in seed_instructions}
    seen: set[str] = set()
    out: list[str] = []
    for reply in replies:
        if reply is None or not reply.strip():
            counts["empty"] += 1
            continue
        if is_refusal(reply):
            counts["refusal"] += 1
            continue
        items = parse_instruction_list(reply)
        if not items:
            counts["unparseable"] += 1
            continue
        for item in items:
            norm = normalize_text(item)
            if len(item) > settings.max_instruction_chars:
                counts["too_long"] += 1
            elif not norm:
                counts["unparseable"] += 1
            elif norm in seen_seed:
                counts["seed_copy"] += 1
            elif norm in seen:
                counts["duplicate"] += 1
            else:
                seen.add(norm)
                if len(out) >= settings.n_instructions:
                    counts["over_limit"] += 1
                else:
                    out.append(item)
    return out, counts


# --------------------------------------------------------------------------- (b) verifiers

_VERIFIER_TEMPLATE = (
    "Instruction: {instruction}\n\n"
    "Write a Python function `evaluate(response: str) -> bool` that returns True when a "
    "response follows the instruction above and False when it does not. Use only the Python "
    "standard library, do not read files or use the network, and keep it short.\n"
    "Then write {n} test cases: example responses, some that follow the instruction and some "
    "that break it, each with the verdict the function should give.\n"
    "Use exactly this layout and nothing else:\n"
    "```python\n"
    "def evaluate(response: str) -> bool:\n"
    "    ...\n"
    "```\n"
    "```json\n"
    '[{{"response": "an example response", "expected": true}}, '
    '{{"response": "another example response", "expected": false}}]\n'
    "```"
)
_PY_BLOCK_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_JSON_BLOCK_RE = re.compile(r"```json[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def build_verifier_prompt(instruction: str, n_cases: int) -> str:
    """Step (b) prompt: an ``evaluate(response: str) -> bool`` for ``instruction`` and ``n_cases``
    test cases, in the fenced Python + JSON layout :func:`parse_verifier` reads
    (reference code: ``AutoIF/2_Verification.py``)."""
    return _VERIFIER_TEMPLATE.format(instruction=instruction.strip(), n=n_cases)


@dataclass(frozen=True)
class VerifierCase:
    """One test case of a verifier: an example ``response`` and the verdict ``expected``."""

    response: str
    expected: bool


def _as_case(obj: Any) -> VerifierCase | None:
    if not isinstance(obj, dict):
        return None
    resp = obj.get("response")
    exp = obj.get("expected", obj.get("label", obj.get("result")))
    if isinstance(exp, str) and exp.strip().lower() in ("true", "false"):
        exp = exp.strip().lower() == "true"
    if not isinstance(resp, str) or not isinstance(exp, bool):
        return None
    return VerifierCase(resp, exp)


def parse_verifier(text: str | None) -> tuple[str | None, list[VerifierCase]]:
    """The ``evaluate`` function source and the test cases of one evolver reply.

    The function is the first fenced Python block that defines ``evaluate``
    (or, with no fences, the text from ``def evaluate`` / its imports on). Test
    cases come from fenced ```json blocks (a list of objects with
    ``response`` and ``expected``), else from lines that are JSON objects.
    Malformed cases are skipped.
    """
    if not text:
        return None, []
    code = None
    for block in _PY_BLOCK_RE.findall(text):
        if re.search(r"^\s*def\s+evaluate\s*\(", block, re.MULTILINE) and not block.lstrip().startswith(("[", "{")):
            code = block.strip("\n")
            break
    if code is None and "```" not in text:
        m = re.search(r"^(?:(?:import|from)\s[^\n]*\n)*def\s+evaluate\s*\(", text, re.MULTILINE)
        if m:
            code = text[m.start():].strip("\n")
    cases: list[VerifierCase] = []
    blocks = _JSON_BLOCK_RE.findall(text)
    for block in blocks:
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            data = [json.loads(ln) for ln in block.splitlines() if _is_json_object(ln)]
        if isinstance(data, dict):
            data = data.get("cases") or data.get("test_cases") or [data]
        if isinstance(data, list):
            cases.extend(c for c in map(_as_case, data) if c is not None)
    if not blocks:
        for ln in text.splitlines():
            if _is_json_object(ln):
                case = _as_case(json.loads(ln))
                if case is not None:
                    cases.append(case)
    return code, cases


def _is_json_object(line: str) -> bool:
    line = line.strip().rstrip(",")
    if not (line.startswith("{") and line.endswith("}")):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def write_verifiers(instructions: Sequence[str], generate_fn: GenerateFn, settings: AutoIFSettings
                    ) -> tuple[dict[str, tuple[list[str], list[VerifierCase]]], dict[str, int]]:
    """Step (b): per instruction, the distinct functions and pooled test cases; drop counts."""
    counts = {r: 0 for r in VERIFIER_REASONS}
    m = settings.functions_per_instruction
    prompts = [build_verifier_prompt(ins, settings.cases_per_prompt) for ins in instructions for _ in range(m)]
    replies = generate_fn(prompts) if prompts else []
    if len(replies) != len(prompts):
        raise ValueError(f"generate_fn returned {len(replies)} outputs for {len(prompts)} prompts")
    out: dict[str, tuple[list[str], list[VerifierCase]]] = {}
    for j, ins in enumerate(instructions):
        funcs: list[str] = []
        cases: list[VerifierCase] = []
        for reply in replies[j * m:(j + 1) * m]:
            if reply is None or not reply.strip():
                counts["empty"] += 1
                continue
            code, got = parse_verifier(reply)
            if code is None:
                counts["no_function"] += 1
            elif code in funcs:
                counts["duplicate_function"] += 1
            else:
                funcs.append(code)
            if not got:
                counts["no_cases"] += 1
            cases.extend(got)
        out[ins] = (funcs, cases)
    return out, counts


# --------------------------------------------------------------------------- (c) cross-validation


def pool_cases(cases: Sequence[VerifierCase]) -> list[VerifierCase]:
    """Distinct cases; a response given contradicting verdicts is dropped altogether."""
    verdicts: dict[str, set[bool]] = {}
    for c in cases:
        verdicts.setdefault(c.response, set()).add(c.expected)
    return [VerifierCase(r, next(iter(v))) for r, v in verdicts.items() if len(v) == 1]


def cross_validate(verifiers: Mapping[str, tuple[list[str], list[VerifierCase]]], settings: AutoIFSettings
                   ) -> tuple[pl.DataFrame, dict[str, int], dict[str, int]]:
    """Step (c): run every function on its instruction's pooled cases in the sandbox.

    Returns one row per (instruction, function) with ``accuracy``, ``n_cases``,
    ``kept`` and ``reason`` (``None`` when kept), plus function-level and
    instruction-level drop counts. A function fails with a sandbox reason when
    every case failed for that same reason (e.g. ``syntax``, ``timeout``,
    ``blocked``); with ``non_bool`` when it returned non-booleans; otherwise with
    ``low_accuracy`` when accuracy < ``accuracy_threshold``. A non-boolean or
    failed call counts as a wrong answer.
    """
    fcounts = {r: 0 for r in FUNCTION_REASONS}
    icounts = {r: 0 for r in INSTRUCTION_REASONS}
    jobs: list[SandboxJob] = []
    owners: list[tuple[str, str, list[VerifierCase]]] = []
    for ins, (funcs, raw_cases) in verifiers.items():
        cases = pool_cases(raw_cases)
        if len(cases) < settings.min_cases:
            icounts["too_few_cases"] += 1
            continue
        for code in funcs:
            jobs.append(SandboxJob(code, "evaluate", tuple((c.response,) for c in cases)))
            owners.append((ins, code, cases))
    results = run_many(jobs, settings.sandbox_settings, desc="autoif verify") if jobs else []
    rows = []
    for (ins, code, cases), res in zip(owners, results):
        correct = sum(1 for c, r in zip(cases, res) if r.ok and isinstance(r.value, bool) and r.value == c.expected)
        accuracy = correct / len(cases)
        reason = None
        failed = [r.reason for r in res if not r.ok]
        if len(failed) == len(res) and len(set(failed)) == 1:
            reason = failed[0]
        elif all(r.ok and not isinstance(r.value, bool) for r in res):
            reason = "non_bool"
        elif accuracy < settings.accuracy_threshold:
            reason = "low_accuracy"
        if reason is not None:
            fcounts[reason if reason in fcounts else "error"] += 1
        rows.append({
            "instruction_id": content_id("autoif-instruction", ins), "verifiable_instruction": ins,
            "function_id": content_id("autoif-function", ins, code), "code": code,
            "n_cases": len(cases), "accuracy": accuracy, "kept": reason is None, "reason": reason,
            "failures": json.dumps(dict(sorted(Counter(failed).items()))),
        })
    table = pl.DataFrame(rows, schema=VERIFIER_SCHEMA) if rows else pl.DataFrame(schema=VERIFIER_SCHEMA)
    surviving = set(table.filter(pl.col("kept"))["verifiable_instruction"].to_list())
    # instructions with enough cases but no surviving (or no) function
    with_cases = [ins for ins, (_, c) in verifiers.items() if len(pool_cases(c)) >= settings.min_cases]
    icounts["no_surviving_function"] = sum(1 for ins in with_cases if ins not in surviving)
    return table, fcounts, icounts


VERIFIER_SCHEMA = {
    "instruction_id": pl.String, "verifiable_instruction": pl.String, "function_id": pl.String,
    "code": pl.String, "n_cases": pl.Int64, "accuracy": pl.Float64, "kept": pl.Boolean,
    "reason": pl.String, "failures": pl.String,
}


# --------------------------------------------------------------------------- (d) pairing

PAIR_COLUMNS = ("id", "parent_id", "root_id", "round", "operation", "evolver", "instruction",
                "query", "verifiable_instruction", "verifiable_id", "verifier_code", "verifier_accuracy")


def pair_queries(queries: pl.DataFrame, verifiers: pl.DataFrame, settings: AutoIFSettings,
                 evolver: str = "evolver", round: int = 1) -> pl.DataFrame:
    """Step (d): ``query + " " + instruction`` rows with lineage and surviving verifier code.

    Each query gets ``pairs_per_query`` distinct surviving instructions -- or,
    when ``queries_per_instruction`` is set, each surviving instruction gets that
    many distinct queries -- chosen by a seeded hash of (query id, instruction
    id), which is stable under subsetting; ``max_pairs`` then keeps a seeded
    subset.
    """
    missing = [c for c in ("id", "instruction") if c not in queries.columns]
    if missing:
        raise DataError(f"autoif: query table lacks column(s) {missing}; has {queries.columns}")
    kept = verifiers.filter(pl.col("kept"))
    by_ins: dict[str, dict[str, Any]] = {}
    for row in kept.sort("function_id").iter_rows(named=True):
        entry = by_ins.setdefault(row["verifiable_instruction"],
                                  {"id": row["instruction_id"], "code": [], "acc": 0.0})
        entry["code"].append(row["code"])
        entry["acc"] = max(entry["acc"], row["accuracy"])
    schema = {c: pl.String for c in PAIR_COLUMNS}
    schema.update(round=pl.Int64, verifier_code=pl.List(pl.String), verifier_accuracy=pl.Float64)
    if not by_ins:
        return pl.DataFrame(schema=schema)
    roots = queries["root_id"].to_list() if "root_id" in queries.columns else queries["id"].to_list()
    qrows = list(zip(queries["id"].to_list(), queries["instruction"].to_list(), roots))

    def key(qid: str, entry: dict[str, Any]) -> str:
        return content_id("autoif-pair", settings.seed, qid, entry["id"])

    chosen: list[tuple[tuple[str, str, str], str, dict[str, Any]]] = []
    if settings.queries_per_instruction is not None:
        for ins, entry in by_ins.items():
            for q in sorted(qrows, key=lambda q: key(q[0], entry))[:settings.queries_per_instruction]:
                chosen.append((q, ins, entry))
    else:
        for q in qrows:
            ranked = sorted(by_ins.items(), key=lambda kv: key(q[0], kv[1]))
            chosen.extend((q, ins, entry) for ins, entry in ranked[:settings.pairs_per_query])
    rows = []
    for (qid, query, root), ins, entry in chosen:
        text = f"{query.rstrip()} {ins.strip()}"
        rows.append({
            "id": content_id(qid, AUTOIF_OPERATION, round, text), "parent_id": qid,
            "root_id": root or qid, "round": round, "operation": AUTOIF_OPERATION,
            "evolver": evolver, "instruction": text, "query": query,
            "verifiable_instruction": ins, "verifiable_id": entry["id"],
            "verifier_code": entry["code"], "verifier_accuracy": entry["acc"],
        })
    df = pl.DataFrame(rows, schema=schema)
    if settings.max_pairs is not None and df.height > settings.max_pairs:
        keys = pl.Series("_k", [content_id("autoif-cap", settings.seed, i) for i in df["id"].to_list()])
        df = df.with_columns(keys).sort("_k").head(settings.max_pairs).drop("_k")
    return df.sort("id")


# --------------------------------------------------------------------------- all steps


@dataclass
class AutoIFResult:
    """What :func:`propose_verify_pair` returns: the paired instructions (``pairs``,
    :data:`PAIR_COLUMNS`), one row per verifier function (``verifiers``, :data:`VERIFIER_SCHEMA`),
    the instructions that went through steps (b)-(d), and drop counts (step -> reason -> n)."""

    pairs: pl.DataFrame
    verifiers: pl.DataFrame
    instructions: list[str]
    counts: dict[str, dict[str, int]]


def propose_verify_pair(queries: pl.DataFrame, generate_fn: GenerateFn, settings: AutoIFSettings,
                        seed_instructions: Sequence[str], evolver: str = "evolver",
                        round: int = 1) -> AutoIFResult:
    """AutoIF steps (a)-(d) with one evolver: propose verifiable instructions, write verifiers,
    cross-validate them in the sandbox, pair the survivors with the seed ``queries``
    (``id``, ``instruction``).

    Hui et al. 2024, scenario AutoIF (method of Dong et al. 2024; reference code:
    HypherX/Evolution-Analysis ``AutoIF/1_RFT.py`` … ``4_Concat_ShareGPT.py``). Returns
    :class:`AutoIFResult`; ``counts`` maps step (propose, verifier, function, instruction) ->
    reason -> number dropped. Raises DataError for an empty seed instruction list.
    """
    seeds = list(seed_instructions)
    if not seeds:
        raise DataError("autoif: empty seed instruction list")
    proposed, c_prop = propose_instructions(seeds, generate_fn, settings)
    instructions = (seeds if settings.include_seed_instructions else []) + proposed
    log.info("autoif (%s): %d proposed (+%d seeds); dropped %s", evolver, len(proposed),
             len(seeds) if settings.include_seed_instructions else 0, c_prop)
    verifiers, c_ver = write_verifiers(instructions, generate_fn, settings)
    table, c_fun, c_ins = cross_validate(verifiers, settings)
    pairs = pair_queries(queries, table, settings, evolver=evolver, round=round)
    counts = {"propose": c_prop, "verifier": c_ver, "function": c_fun, "instruction": c_ins}
    log.info("autoif (%s): %d functions kept of %d; %d instructions survive; %d pairs",
             evolver, int(table["kept"].sum()) if table.height else 0, table.height,
             table.filter(pl.col("kept"))["verifiable_instruction"].n_unique() if table.height else 0,
             pairs.height)
    return AutoIFResult(pairs=pairs, verifiers=table, instructions=instructions, counts=counts)


# --------------------------------------------------------------------------- rule evolve_autoif


def evolve_autoif(seeds: str | Path, seed_instructions: str | Path, model_dir: str | Path,
                  evolved: str | Path, drops: str | Path, verifiers: str | Path, evolver: str,
                  settings: Mapping[str, Any], max_new_tokens: int, prompt_format: str,
                  backend: Mapping[str, Any], seed: int, threads: int = 1) -> pl.DataFrame:
    """Rule ``evolve_autoif``: AutoIF with one evolver on a seed set (:func:`propose_verify_pair`).

    Inputs: ``seeds`` (the seed set's queries: ``id``, ``instruction``), ``seed_instructions``
    (text file, one verifiable instruction per line), the evolver ``model_dir``. Params:
    ``evolver`` (alias), ``settings`` (:class:`AutoIFSettings` without ``seed``),
    ``max_new_tokens``, ``prompt_format``, ``backend`` (engine settings), ``seed``. The evolver
    decodes greedily, without log-probs.

    Writes ``evolved`` (the paired instructions, :data:`PAIR_COLUMNS` plus ``scenario``; round 1),
    ``verifiers`` (:data:`VERIFIER_SCHEMA`, one row per function) and ``drops`` (JSON in the
    shape of the other scenarios' reports: ``evolver``, ``scenario``, ``round``,
    ``input_rows``, ``kept``, ``dropped`` as ``"<step>:<reason>" -> count``, plus AutoIF's
    instruction / function counts and settings). Returns the ``evolved`` table.
    """
    cfg = AutoIFSettings.from_dict({**settings, "seed": seed})
    queries = read_table(seeds)
    generation = EvolverGeneration(prompt_format=prompt_format, max_new_tokens=max_new_tokens, seed=seed,
                                   temperature=0.0, top_p=1.0, logprobs=False)
    generate_fn = make_generate_fn(model_dir, generation, backend, threads=threads, desc=f"autoif {evolver}")
    result = propose_verify_pair(queries, generate_fn, cfg, load_seed_instructions(seed_instructions),
                                 evolver=evolver)
    dropped = {f"{step}:{reason}": int(n) for step, reasons in result.counts.items()
               for reason, n in reasons.items()}
    report = {
        "evolver": evolver, "queries": queries.height, "instructions": len(result.instructions),
        "functions": result.verifiers.height,
        "functions_kept": int(result.verifiers["kept"].sum()) if result.verifiers.height else 0,
        "pairs": result.pairs.height, "dropped": dropped,
        "settings": {k: v for k, v in cfg.__dict__.items() if k != "sandbox_settings"},
        "scenario": "autoif", "round": 1, "input_rows": queries.height, "kept": result.pairs.height,
    }
    pairs = result.pairs.with_columns(pl.lit("autoif").alias("scenario"))
    write_parquet(result.verifiers, verifiers)
    write_json(report, drops)
    write_parquet(pairs, evolved)
    return pairs
