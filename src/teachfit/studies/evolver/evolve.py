"""Instruction evolution (Hui et al. 2024, "Smaller Language Models Are Better Instruction Evolvers").

Scenario 1, Evol-Instruct: each instruction gets one seeded operation per round
-- four in-depth rewrites (``constraints``, ``deepen``, ``concretize``,
``reasoning``) or the in-breadth mutation (``breadth``) -- and the
evolver's output is parsed and filtered (:func:`classify_failure`).
Reference code: HypherX/Evolution-Analysis ``Evol_Instruct/evol_instruct.py``.

Scenario 2, Auto Evol-Instruct: the evolver lists methods, writes a plan,
rewrites, reviews and writes a final rewrite in a fixed layout; only the final
rewrite is kept (:func:`parse_auto_evol`). Reference code:
``Auto_Evol_Instruct/auto_evol_instruct.py``.

One call handles one round; the workflow chains rounds (round ``r`` reads round
``r-1``'s table). Every kept row carries its lineage: ``id`` =
``content_id(parent_id, operation, round, instruction)``, ``parent_id``,
``root_id`` (the seed id), ``round``, ``operation`` and ``evolver``.

The model is reached only through ``generate_fn: Callable[[list[str]], list[str]]``
(one completion per prompt); :func:`make_generate_fn` builds one from
``teachfit.generation`` for the workflow, tests inject a fake. The rule function is
:func:`evolve_instructions`; equal-size sets are ``teachfit.studies.evolver.sets``,
data selection ``teachfit.training.selection``.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, content_id, read_parquet, write_json, write_parquet
from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)

GenerateFn = Callable[[list[str]], list[str]]

# --------------------------------------------------------------------------- prompts

IN_DEPTH_OPERATIONS = ("constraints", "deepen", "concretize", "reasoning")
OPERATIONS = (*IN_DEPTH_OPERATIONS, "breadth")
AUTO_EVOL_OPERATION = "auto_evol"

_IN_DEPTH_HEADER = (
    "Your job is to rewrite a task instruction into a harder version of itself. The harder "
    "version should give well-known AI assistants such as ChatGPT and GPT-4 more trouble, "
    "yet it must still make sense and be something a person could understand and answer.\n"
    "Rules:\n"
    "- Keep every non-text part of the instruction (tables, code, data, given input) exactly as it is.\n"
    "- Keep the rewrite short: add roughly 10 to 20 words, not more.\n"
    "- The rewrite must stand on its own. Do not mention 'the original instruction', "
    "'the given instruction' or 'the rewritten instruction' in it.\n"
    "How to make it harder this time: {method}\n\n"
    "#Instruction#:\n{instruction}\n\n"
    "Reply with the harder instruction only, right after the line #Rewritten Instruction#:\n"
    "#Rewritten Instruction#:\n"
)

_METHODS = {
    "constraints": "add one more requirement or constraint that a correct answer has to satisfy.",
    "deepen": (
        "if the instruction asks about a particular issue, ask about it in more depth and "
        "breadth, so that a good answer has to cover more ground."
    ),
    "concretize": (
        "replace general ideas in the instruction with more specific ones (a particular "
        "case, named things, concrete numbers or circumstances)."
    ),
    "reasoning": (
        "if the instruction can be answered with one or two simple thinking steps, rewrite "
        "it so that answering explicitly requires reasoning through several steps."
    ),
}

_BREADTH_TEMPLATE = (
    "Your job is to invent a brand-new task instruction, using the instruction below only "
    "as inspiration. The new instruction should belong to the same domain but be about a "
    "rarer, less common topic. Make it about as long and as difficult as the one below. "
    "It must make sense and be something a person could understand and answer. "
    "Do not mention the instruction below or the words 'new instruction' in it.\n\n"
    "#Instruction#:\n{instruction}\n\n"
    "Reply with the new instruction only, right after the line #New Instruction#:\n"
    "#New Instruction#:\n"
)

_AUTO_EVOL_TEMPLATE = (
    "You rewrite instructions into more complex versions. Work through four steps and use "
    "exactly the layout shown at the end.\n"
    "Step 1: Read the #Instruction# below and list methods that could make it more complex "
    "(for example extra constraints, deeper questions, more specific cases, more reasoning "
    "steps). Only list methods that fit this instruction and do not change its language.\n"
    "Step 2: Write a plan that picks several methods from your list and says how to apply them.\n"
    "Step 3: Carry out the plan and write the #Rewritten Instruction#. Add only 10 to 20 "
    "words, and keep any given input, table or code unchanged.\n"
    "Step 4: Check the #Rewritten Instruction# for anything unreasonable, fix it, and write "
    "the #Finally Rewritten Instruction#, which is only the instruction itself with no "
    "explanation.\n\n"
    "#Instruction#:\n{instruction}\n\n"
    "Layout of your reply:\n"
    "Step 1 #Methods List#:\n"
    "Step 2 #Plan#:\n"
    "Step 3 #Rewritten Instruction#:\n"
    "Step 4 #Finally Rewritten Instruction#:\n"
)


def build_evol_prompt(instruction: str, op: str) -> str:
    """The evolver prompt for one Evol-Instruct operation (see :data:`OPERATIONS`)."""
    if op == "breadth":
        return _BREADTH_TEMPLATE.format(instruction=instruction.strip())
    if op not in _METHODS:
        raise ValueError(f"unknown evolution operation {op!r}; allowed: {', '.join(OPERATIONS)}")
    return _IN_DEPTH_HEADER.format(method=_METHODS[op], instruction=instruction.strip())


def build_auto_evol_prompt(instruction: str) -> str:
    """The Auto Evol-Instruct prompt (methods list, plan, rewrite, final rewrite)."""
    return _AUTO_EVOL_TEMPLATE.format(instruction=instruction.strip())


# --------------------------------------------------------------------------- parsing

_MARKER_RE = re.compile(
    r"(?:\bstep\s*\d\s*)?[#*\s]*"
    r"\b(?:finally\s+rewritten\s+(?:instruction|prompt)|rewritten\s+(?:instruction|prompt)"
    r"|new\s+(?:instruction|prompt)|created\s+(?:instruction|prompt))\b"
    r"[#*\s]*:\**",
    re.IGNORECASE,
)
_FINAL_RE = re.compile(
    r"(?:\bstep\s*4\s*)?[#*\s]*\bfinally\s+rewritten\s+(?:instruction|prompt)\b[#*\s]*:?\**",
    re.IGNORECASE,
)
_PREAMBLE_RE = re.compile(
    r"^\s*(?:sure|okay|ok|certainly|of course|here(?:'s| is| are)|below is)\b[^\n]*:\s*$",
    re.IGNORECASE,
)
_CHATTER_RE = re.compile(
    r"^\s*(?:[*_#>\-]+\s*)?(?:"
    r"explanations?\b|changes(?: made)?\s*:|rationale\s*:|reasoning\s*:|"
    r"(?:this|the|my|in the|in this)\s+(?:rewritten|new|revised|evolved|updated)\b|"
    r"i\s+(?:have\s+)?(?:added|made|changed|rewrote|rewritten|replaced|introduced|increased)\b|"
    r"by\s+(?:adding|asking|requiring|replacing)\b|"
    r"#\s*[a-z][a-z ]*#"
    r")",
    re.IGNORECASE,
)
_LEAK_RE = re.compile(
    r"#\s*(?:instruction|given (?:instruction|prompt)|original (?:instruction|prompt)|"
    r"methods list|plan|rewritten instruction|new instruction)\s*#|"
    r"\b(?:the )?(?:original|given|rewritten) (?:instruction|prompt)s?\b|"
    # our own prompt wording echoed back, or the evolver narrating its task
    r"\bhow to make it harder this time\b|\breply with the (?:harder|new) instruction\b|"
    r"\bkeep the rewrite short\b|\bi(?: will|'ll| am going to) rewrite\b",
    re.IGNORECASE,
)
_REFUSAL_START_RE = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry[,!.]|i apologi[sz]e|unfortunately,? i\b|"
    r"i (?:cannot|can ?not|can'?t|won'?t|am unable|'m unable|am not able|'m not able)\b|"
    r"as an ai\b|as a(?:n ai)? language model\b)",
    re.IGNORECASE,
)
_REFUSAL_ANY_RE = re.compile(r"\bas an ai (?:language )?model\b|\bas a large language model\b", re.IGNORECASE)
_QUOTES = (('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("**", "**"), ("`", "`"))


def _strip_wrappers(text: str) -> str:
    text = text.strip()
    # a lone opening or closing quote left over after trailing chatter was cut
    for q in ('"', "“", "”"):
        if text.count(q) == 1 and (text.startswith(q) or text.endswith(q)) and not (q == "”" and text.startswith(q)):
            text = text.replace(q, "", 1).strip()
    fence = re.fullmatch(r"```[a-zA-Z]*\n(.*?)\n?```", text, re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    changed = True
    while changed and text:
        changed = False
        for left, right in _QUOTES:
            if len(text) >= len(left) + len(right) + 1 and text.startswith(left) and text.endswith(right):
                inner = text[len(left):len(text) - len(right)]
                # only strip a pair that wraps the whole text, not '"a" and "b"'
                if left not in inner and right not in inner:
                    text = inner.strip()
                    changed = True
    return text


def _clean_body(text: str) -> str | None:
    lines = text.strip("\n").splitlines()
    while lines and (not lines[0].strip() or _PREAMBLE_RE.match(lines[0])
                     or _MARKER_RE.fullmatch(lines[0].strip())):
        lines.pop(0)
    kept: list[str] = []
    for line in lines:
        stripped = line.strip()
        if kept and (_CHATTER_RE.match(stripped) or stripped in ("---", "***", "___")):
            break
        kept.append(line)
    body = _strip_wrappers("\n".join(kept).strip())
    return body or None


def parse_evolved(text: str | None) -> str | None:
    """Extract the rewritten instruction from an evolver reply; ``None`` if nothing is left.

    Takes the text after the first "Rewritten Instruction:"-style marker (any of
    rewritten/new/created/finally rewritten + instruction/prompt, with or
    without ``#``/``**``) that is followed by text, else the whole reply; drops a "Sure, here is…:"
    opening line, cuts trailing commentary ("Explanation:", "This rewritten
    version…", "I added…", a ``#Section#`` line, ``---``), and strips quotes,
    bold markers or a code fence wrapping the whole instruction.
    """
    if text is None or not text.strip():
        return None
    for match in _MARKER_RE.finditer(text):
        body = _clean_body(text[match.end():])
        if body is not None:
            return body
    return _clean_body(text)


def parse_auto_evol(text: str | None) -> str | None:
    """Keep only the Step 4 "#Finally Rewritten Instruction#" section; ``None`` if absent/empty."""
    if text is None:
        return None
    # the last non-empty final section (a model may echo the empty layout first)
    for match in reversed(list(_FINAL_RE.finditer(text))):
        body = _clean_body(text[match.end():])
        if body is not None:
            return body
    return None


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces (for copy/duplicate tests)."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def is_refusal(text: str) -> bool:
    """A refusal or AI disclaimer at the start of the reply ("I'm sorry", "As an AI…")."""
    body = _MARKER_RE.sub(" ", text, count=1)
    return bool(_REFUSAL_START_RE.match(body.strip()) or _REFUSAL_ANY_RE.search(text))


def is_copy(original: str, evolved: str, min_new_words: int = 2, copy_ratio: float = 0.9) -> bool:
    """Equal after normalization (case, punctuation, spaces), or a near copy.

    A near copy adds fewer than ``min_new_words`` new words (multiset difference
    of normalized words) *and* has a character similarity ratio
    (``difflib.SequenceMatcher``) of at least ``copy_ratio`` to the original.
    """
    a, b = normalize_text(original), normalize_text(evolved)
    if a == b:
        return True
    new_words = sum((Counter(b.split()) - Counter(a.split())).values())
    if new_words >= min_new_words:
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= copy_ratio


FAILURE_REASONS = ("empty", "refusal", "unparseable", "too_long", "copy", "duplicate")


@dataclass
class FilterSettings:
    """Thresholds of the reply filter (:func:`classify_failure`); constants no config sets."""

    max_chars: int = field(default=4000, metadata={"help": "longer evolved instructions are dropped (too_long)"})
    min_new_words: int = field(default=2, metadata={"help": "near-copy test: fewer new words than this ..."})
    copy_ratio: float = field(default=0.9, metadata={"help": "... and at least this similarity is a copy"})

    def __post_init__(self) -> None:
        if self.max_chars < 1 or self.min_new_words < 0 or not 0 < self.copy_ratio <= 1:
            raise ValueError("evolve filters: max_chars >= 1, min_new_words >= 0, 0 < copy_ratio <= 1")


def classify_failure(original: str, evolved_text: str | None, *, parser: Callable[[str | None], str | None] = parse_evolved,
                     filters: FilterSettings | None = None) -> str | None:
    """Why an evolver reply is unusable, or ``None`` if it is kept.

    Checked in order: ``empty`` (blank reply), ``refusal`` (:func:`is_refusal`),
    ``unparseable`` (the parser finds nothing, or the result still contains
    prompt scaffolding such as ``#Instruction#`` or "the given instruction"),
    ``too_long`` (over ``max_chars``), ``copy`` (:func:`is_copy`).
    """
    filters = filters or FilterSettings()
    if evolved_text is None or not evolved_text.strip():
        return "empty"
    if is_refusal(evolved_text):
        return "refusal"
    parsed = parser(evolved_text)
    if parsed is None or _LEAK_RE.search(parsed):
        return "unparseable"
    if is_refusal(parsed):
        return "refusal"
    if len(parsed) > filters.max_chars:
        return "too_long"
    if is_copy(original, parsed, filters.min_new_words, filters.copy_ratio):
        return "copy"
    return None


# --------------------------------------------------------------------------- rounds


def assign_operations(ids: Sequence[str], ops: Sequence[str], seed: int, round: int) -> list[str]:
    """One operation per id, from a hash of (seed, round, id).

    Depends only on the id, not on the other rows or their order, so a subset
    or a re-ordered table gets the same operations.
    """
    if not ops:
        raise ValueError("assign_operations: empty operation list")
    unknown = [op for op in ops if op not in OPERATIONS]
    if unknown:
        raise ValueError(f"unknown evolution operation(s) {unknown}; allowed: {', '.join(OPERATIONS)}")
    ops = list(ops)
    return [ops[int(content_id("evol-op", seed, round, i), 16) % len(ops)] for i in ids]


LINEAGE_COLUMNS = ("id", "parent_id", "root_id", "round", "operation", "evolver", "instruction")
CARRIED_COLUMNS = ("seedset", "category")


def _check_records(records: pl.DataFrame, where: str) -> None:
    missing = [c for c in ("id", "instruction") if c not in records.columns]
    if missing:
        raise DataError(f"{where}: input table lacks column(s) {missing}; has {records.columns}")
    if records.height and records["id"].n_unique() != records.height:
        raise DataError(f"{where}: input ids are not unique")


def _empty_kept(carried: Sequence[str]) -> pl.DataFrame:
    schema: dict[str, Any] = {c: pl.String for c in LINEAGE_COLUMNS}
    schema["round"] = pl.Int64
    for c in carried:
        schema[c] = pl.String
    return pl.DataFrame(schema=schema)


def _finish_round(records: pl.DataFrame, outputs: Sequence[str | None], operations: Sequence[str],
                  round: int, evolver: str, parser: Callable[[str | None], str | None],
                  filters: FilterSettings | None) -> tuple[pl.DataFrame, dict[str, int]]:
    from tqdm.auto import tqdm

    if len(outputs) != records.height:
        raise ValueError(f"generate_fn returned {len(outputs)} outputs for {records.height} prompts")
    counts = {r: 0 for r in FAILURE_REASONS}
    carried = [c for c in CARRIED_COLUMNS if c in records.columns]
    roots = records["root_id"].to_list() if "root_id" in records.columns else records["id"].to_list()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for k, rec in enumerate(tqdm(records.iter_rows(named=True), total=records.height,
                                 desc=f"filter round {round}", leave=False)):
        reason = classify_failure(rec["instruction"], outputs[k], parser=parser, filters=filters)
        text = parser(outputs[k]) if reason is None else None
        if reason is None and normalize_text(text) in seen:
            reason = "duplicate"
        if reason is not None:
            counts[reason] += 1
            continue
        seen.add(normalize_text(text))
        row = {
            "id": content_id(rec["id"], operations[k], round, text),
            "parent_id": rec["id"],
            "root_id": roots[k] or rec["id"],
            "round": round,
            "operation": operations[k],
            "evolver": evolver,
            "instruction": text,
        }
        row.update({c: rec[c] for c in carried})
        rows.append(row)
    kept = pl.DataFrame(rows, schema=_empty_kept(carried).schema) if rows else _empty_kept(carried)
    log.info("round %d (%s): kept %d of %d; dropped %s", round, evolver, kept.height,
             records.height, {k: v for k, v in counts.items() if v})
    return kept, counts


def evolve_round(records: pl.DataFrame, generate_fn: GenerateFn, ops: Sequence[str],
                 seed: int, round: int = 1, evolver: str = "evolver",
                 filters: FilterSettings | None = None) -> tuple[pl.DataFrame, dict[str, int]]:
    """One Evol-Instruct round over ``records`` (``id``, ``instruction``; ids unique).

    Returns (kept rows with lineage, :data:`LINEAGE_COLUMNS` plus the carried columns;
    drop counts by reason, :data:`FAILURE_REASONS`). ``ops`` are drawn per row by
    :func:`assign_operations` with ``seed``. Raises DataError on a malformed table,
    ValueError when ``generate_fn`` returns a different number of replies.
    """
    _check_records(records, f"evolve round {round}")
    operations = assign_operations(records["id"].to_list(), ops, seed, round)
    prompts = [build_evol_prompt(t, op) for t, op in zip(records["instruction"], operations)]
    outputs = generate_fn(prompts) if prompts else []
    return _finish_round(records, outputs, operations, round, evolver, parse_evolved, filters)


def auto_evol_round(records: pl.DataFrame, generate_fn: GenerateFn, seed: int, round: int = 1,
                    evolver: str = "evolver",
                    filters: FilterSettings | None = None) -> tuple[pl.DataFrame, dict[str, int]]:
    """One Auto Evol-Instruct round; same return shape as :func:`evolve_round`.

    ``seed`` is accepted for a uniform call signature; the prompt has no random
    part (sampling randomness lives in the generation settings).
    """
    del seed
    _check_records(records, f"auto-evol round {round}")
    prompts = [build_auto_evol_prompt(t) for t in records["instruction"]]
    if getattr(generate_fn, "supports_primer", False) and prompts:
        outputs = primed_auto_evol(prompts, generate_fn)
    else:
        outputs = generate_fn(prompts) if prompts else []
    operations = [AUTO_EVOL_OPERATION] * records.height
    return _finish_round(records, outputs, operations, round, evolver, parse_auto_evol, filters)


AUTO_EVOL_PRIMER = "Step 1 #Methods List#:\n"
AUTO_EVOL_FINAL_HEADER = "\nStep 4 #Finally Rewritten Instruction#:\n"
_STEP4_RE = re.compile(r"\n?\s*step\s*4\b", re.IGNORECASE)


def primed_auto_evol(prompts: list[str], generate_fn: Any) -> list[str]:
    """Auto Evol-Instruct with the reply layout primed (for small evolvers).

    Pass 1 starts the evolver's reply with "Step 1 #Methods List#:" so it writes its
    methods, plan and rewrite in the layout. A reply that does not reach step 4 gets a
    pass 2: its own steps 1-3 (cut before any partial step 4) followed by the
    "Step 4 #Finally Rewritten Instruction#:" header, and the evolver writes the final
    rewrite. Only the final rewrite is kept (parse_auto_evol); a reply that is still
    unparseable is dropped and counted. The full reply text is returned, so the
    primed headers are part of what is parsed.
    """
    first = generate_fn(prompts, primer=AUTO_EVOL_PRIMER)
    replies = [AUTO_EVOL_PRIMER + t for t in first]
    need = [i for i, r in enumerate(replies) if parse_auto_evol(r) is None]
    if need:
        primers = []
        for i in need:
            body = replies[i]
            m = _STEP4_RE.search(body)
            body = body[: m.start()] if m else body
            primers.append(body.rstrip() + AUTO_EVOL_FINAL_HEADER)
        second = generate_fn([prompts[i] for i in need], primer=primers)
        for i, primer, text in zip(need, primers, second):
            replies[i] = primer + text
    log.info("auto-evol: %d of %d replies needed the primed final step", len(need), len(prompts))
    return replies


# --------------------------------------------------------------------------- settings + engine


EVOL_METHODS = ("evol_instruct", "auto_evol")


@dataclass
class EvolSettings:
    """What one evolution job computes with: the scenario (``method``), the run seed and the
    scenario's config section ``evolver.scenarios.<method>`` without the plan keys
    (:func:`teachfit.plan.scenario_settings`): ``operations`` for Evol-Instruct, nothing for
    Auto Evol-Instruct. The filter thresholds are constants of the reply filter that no
    config sets (:class:`FilterSettings`)."""

    method: str = field(metadata={"help": "evol_instruct | auto_evol", "choices": EVOL_METHODS})
    seed: int = field(metadata={"help": "run seed: the per-row operation draw (assign_operations)"})
    operations: list[str] | None = field(
        default=None,
        metadata={"help": "evol_instruct: operations drawn per row (evolver.scenarios.evol_instruct.operations); "
                          "auto_evol: none"},
    )
    max_chars: int = field(default=4000, metadata={"help": "drop evolved instructions longer than this"})
    min_new_words: int = field(default=2, metadata={"help": "near-copy test, see is_copy"})
    copy_ratio: float = field(default=0.9, metadata={"help": "near-copy test, see is_copy"})
    version: int = field(default=1, metadata={"help": "bump when prompts/parsing change"})

    def __post_init__(self) -> None:
        if self.method not in EVOL_METHODS:
            raise ValueError(f"evolve.method: {self.method!r} not allowed; allowed: {', '.join(EVOL_METHODS)}")
        if self.method == "evol_instruct":
            bad = [op for op in self.operations or [] if op not in OPERATIONS]
            if bad or not self.operations:
                raise ValueError(f"evolve.operations: {bad or 'empty'} invalid; allowed: {', '.join(OPERATIONS)}")
        elif self.operations is not None:
            raise ValueError(f"evolve.operations: only method evol_instruct draws operations, not {self.method!r}")
        _ = self.filters  # validates the thresholds

    @property
    def filters(self) -> FilterSettings:
        return FilterSettings(self.max_chars, self.min_new_words, self.copy_ratio)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> EvolSettings:
        """Raises ValueError naming unknown or missing keys."""
        return _from_dict(cls, d, "evolve")


def _from_dict(cls: Any, d: Mapping[str, Any] | None, where: str) -> Any:
    """``teachfit.settings.from_dict`` that also names missing keys (fields without a default:
    the values the config supplies) instead of failing with a bare TypeError."""
    import dataclasses

    values = dict(d or {})
    fields = dataclasses.fields(cls)
    unknown = set(values) - {f.name for f in fields}
    missing = [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing and not unknown:
        raise ValueError(f"{where}: missing key(s) {missing}")
    return settings_from_dict(cls, values, where, allowed_label="allowed")


PROMPT_FORMATS = ("chat", "raw", "fewshot")


@dataclass
class EvolverGeneration:
    """How the evolver decodes (the engine itself comes from ``teachfit.generation.engines``).

    ``prompt_format``, ``max_new_tokens`` and ``seed`` come from the config (the evolver
    model's kind, ``evolver.max_new_tokens``, ``seed``). Decoding is greedy with top-1
    log-probs, as the reference code records them for the output-space analysis
    (HypherX/Evolution-Analysis ``Evol_Instruct/get_response_prob.py``: temperature 0,
    ``logprobs=1``); ``top_p`` has no effect while greedy.
    """

    prompt_format: str = field(metadata={"help": "chat | raw | fewshot", "choices": PROMPT_FORMATS})
    max_new_tokens: int = field(metadata={"help": "completion length cap (tokens)"})
    seed: int = field(metadata={"help": "sampling seed (and the vLLM engine seed)"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass (unused while greedy)"})
    logprobs: bool = field(default=True, metadata={"help": "collect top-1 log-probs (output-space stats)"})
    system: str | None = field(default=None, metadata={"help": "optional system message (chat/fewshot)"})

    def __post_init__(self) -> None:
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"generation.prompt_format: {self.prompt_format!r}; allowed: {', '.join(PROMPT_FORMATS)}")
        if self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> EvolverGeneration:
        """Raises ValueError naming unknown or missing keys."""
        return _from_dict(cls, d, "generation")


class BackendGenerateFn:
    """``generate_fn`` over a ``teachfit.generation`` backend: format each prompt, decode once.

    Local engines (transformers, vLLM) get the prompt in the evolver's own format (its chat
    template, or a few-shot text for base models) and support a ``primer``: text written at
    the start of the reply (:func:`primed_auto_evol`). An OpenAI-compatible endpoint
    (``api=True``) gets the prompt text as one user message, the server applies its chat
    template; it supports neither a primer (``supports_primer`` is False, so Auto
    Evol-Instruct runs unprimed) nor few-shot turns or a system message, and top-1 log-probs
    come only from an endpoint that returns them (the backend raises otherwise).

    When ``settings.logprobs`` is on, each completion's top-1 log-probs (nats, one per
    generated token) are appended to :attr:`top1` (input of
    :func:`teachfit.studies.evolver.diversity.top1_stats`).
    """

    def __init__(self, model_dir: str | Path, settings: EvolverGeneration, backend: Any,
                 desc: str = "evolve", api: bool = False) -> None:
        from teachfit.generation.base import SamplingConfig
        from teachfit.prompts import stop_strings

        self.settings = settings
        self.desc = desc
        self.api = api
        self.model = str(model_dir)
        if api and settings.prompt_format != "chat":
            raise ValueError(f"evolver {self.model}: an OpenAI-compatible endpoint takes chat text; "
                             f"prompt format {settings.prompt_format!r} is not supported")
        if api and settings.system is not None:
            raise ValueError(f"evolver {self.model}: no system message through an OpenAI-compatible endpoint")
        if api:
            self.tokenizer = None
        else:
            from teachfit.models import load_tokenizer

            self.tokenizer = load_tokenizer(model_dir)
        self.backend = backend
        self.supports_primer = not api
        self.sampling = SamplingConfig(
            temperature=settings.temperature, top_p=settings.top_p, n=1,
            max_new_tokens=settings.max_new_tokens, seed=settings.seed,
            stop=stop_strings(settings.prompt_format), logprobs=settings.logprobs,
        )
        self.top1: list[list[float]] = []

    def __call__(self, prompts: list[str], primer: str | Sequence[str] = "",
                 fewshot: Sequence[tuple[str, str]] = ()) -> list[str]:
        """One reply per prompt, in order. ``primer`` (one string, or one per prompt) is
        written at the start of the reply, after the prompt's generation header; ``fewshot``
        (prompt, reply) demonstrations precede the prompt (earlier chat turns, or few-shot
        blocks for base models). Raises ValueError for a primer or few-shot turns through an
        OpenAI-compatible endpoint."""
        from teachfit.prompts import format_prompt

        primers = [primer] * len(prompts) if isinstance(primer, str) else list(primer)
        if self.api:
            if any(primers) or fewshot:
                raise ValueError(f"evolver {self.model}: an OpenAI-compatible endpoint cannot prime the "
                                 "reply or take few-shot turns")
            texts = list(prompts)
        else:
            fmt = self.settings.prompt_format
            shots = list(fewshot) if fmt in ("chat", "fewshot") else []
            texts = [format_prompt(self.tokenizer, p, fmt=fmt, system=self.settings.system, fewshot=shots)
                     + pr for p, pr in zip(prompts, primers)]
        outs = self.backend.generate(texts, self.sampling, desc=self.desc)
        if self.settings.logprobs:
            self.top1.extend(list(o[0].top1_logprobs or []) for o in outs)
        return [o[0].text for o in outs]


def make_generate_fn(model_dir: str | Path, generation: Mapping[str, Any] | EvolverGeneration,
                     backend: Mapping[str, Any] | Any, threads: int | None = None,
                     desc: str = "evolve") -> BackendGenerateFn:
    """A ``generate_fn`` running the evolver at ``model_dir``.

    ``generation``: :class:`EvolverGeneration` (or its dict). ``backend``: the engine settings
    of the evolver's model entry (the rule's ``backend`` param,
    :func:`teachfit.generation.engines.backend_settings`), built here with
    ``BackendConfig.from_dict(backend).build(model_dir, threads=threads, seed=generation.seed)``;
    or an already built object with the ``Backend.generate`` protocol (tests, a shared engine).
    """
    settings = generation if isinstance(generation, EvolverGeneration) else EvolverGeneration.from_dict(generation)
    if isinstance(backend, Mapping):
        from teachfit.generation.engines import BackendConfig

        config = BackendConfig.from_dict(dict(backend))
        api = config.backend == "openai"
        engine = config.build(model_dir, threads=threads, seed=settings.seed)
    else:
        engine = backend
        api = getattr(backend, "name", None) == "openai"
    return BackendGenerateFn(model_dir, settings, engine, desc=desc, api=api)


# --------------------------------------------------------------------------- rule evolve_instructions


def evolve_instructions(previous: str | Path, model_dir: str | Path, evolved: str | Path, drops: str | Path,
                        top1: str | Path, scenario: str, evolver: str, round: int, settings: Mapping[str, Any],
                        max_new_tokens: int, prompt_format: str, backend: Mapping[str, Any], seed: int,
                        threads: int = 1) -> pl.DataFrame:
    """Rule ``evolve_instructions``: one round of Evol-Instruct or Auto Evol-Instruct by one evolver.

    Hui et al. 2024, scenarios Evol-Instruct and Auto Evol-Instruct (reference code:
    HypherX/Evolution-Analysis ``Evol_Instruct/evol_instruct.py``,
    ``Auto_Evol_Instruct/auto_evol_instruct.py``).

    Inputs: ``previous`` (Parquet, columns ``id``, ``instruction``, optionally ``root_id`` and
    the carried columns; the seed set for round 1, round ``round - 1`` otherwise) and the
    evolver ``model_dir``. Params: ``scenario`` (evol_instruct | auto_evol), ``evolver`` (its
    alias), ``round`` (1-based), ``settings`` (:class:`EvolSettings` without method and seed),
    ``max_new_tokens``, ``prompt_format`` (chat | fewshot), ``backend`` (engine settings),
    ``seed``. Decoding: :class:`EvolverGeneration` (greedy, top-1 log-probs).

    Writes ``evolved`` (kept rows with lineage, see :data:`LINEAGE_COLUMNS`, plus ``scenario``),
    ``drops`` (JSON: evolver, scenario, round, input_rows, kept, dropped by reason, kept
    operations) and ``top1`` (one row per parent: ``parent_id``, ``top1_logprobs`` (nats per
    generated token of the first reply), ``evolver``, ``scenario``, ``round``). Returns the
    kept rows. Raises DataError on an empty or malformed input table.
    """
    records = read_parquet(previous, required=["id", "instruction"])
    if records.height == 0:
        raise DataError(f"{previous}: empty instruction list; nothing to evolve "
                        f"(every evolution of the previous round was dropped?)")
    if "root_id" not in records.columns:
        records = records.with_columns(pl.col("id").alias("root_id"))
    cfg = EvolSettings.from_dict({"method": scenario, "seed": seed, **settings})
    generation = EvolverGeneration(prompt_format=prompt_format, max_new_tokens=max_new_tokens, seed=seed)
    gen_fn = make_generate_fn(model_dir, generation, backend, threads=threads,
                              desc=f"{scenario} r{round} {evolver}")
    if scenario == "evol_instruct":
        kept, dropped = evolve_round(records, gen_fn, cfg.operations, cfg.seed, round, evolver, cfg.filters)
    else:
        kept, dropped = auto_evol_round(records, gen_fn, cfg.seed, round, evolver, cfg.filters)
    kept = kept.with_columns(pl.lit(scenario).alias("scenario"))
    top1_table = pl.DataFrame({
        "parent_id": records["id"],
        # first pass only: one reply per parent (a primed second Auto Evol pass is extra)
        "top1_logprobs": pl.Series([list(map(float, t)) for t in gen_fn.top1[: records.height]],
                                   dtype=pl.List(pl.Float64)),
    }).with_columns(pl.lit(evolver).alias("evolver"), pl.lit(scenario).alias("scenario"),
                    pl.lit(round).alias("round"))
    log.info("%s round %d (%s): kept %d of %d; dropped %s", scenario, round, evolver,
             kept.height, records.height, dict(dropped))
    write_parquet(top1_table, top1)
    write_json({"evolver": evolver, "scenario": scenario, "round": round, "input_rows": records.height,
                "kept": kept.height, "dropped": dict(dropped),
                "operations": dict(Counter(kept["operation"].to_list())) if kept.height else {}},
               drops)
    write_parquet(kept, evolved)
    return kept
