"""Instruction evolution (Hui et al. 2024, "Smaller Language Models Are Better Instruction Evolvers").

Scenario 1, Evol-Instruct: each instruction gets one seeded operation per round
-- four in-depth rewrites (``constraints``, ``deepen``, ``concretize``,
``reasoning``) or the in-breadth mutation (``breadth``). Reference code:
HypherX/Evolution-Analysis ``Evol_Instruct/evol_instruct.py``.

Scenario 2, Auto Evol-Instruct: the evolver lists methods, writes a plan,
rewrites, reviews and writes a final rewrite in a fixed layout; only the final
rewrite is kept (:func:`parse_auto_evol`). Reference code:
``Auto_Evol_Instruct/auto_evol_instruct.py``.

One call handles one round and returns every reply (:func:`evolve_round`,
:func:`auto_evol_round`); the validity gate (:mod:`teachfit.studies.evolver.gate`, rule
``gate_instructions``) parses and checks them, and the workflow chains rounds (round ``r``
evolves round ``r-1``'s valid instructions). Lineage: ``parent_id``, ``root_id`` (the seed
id), ``round``, ``operation`` and ``evolver`` travel with every reply.

Decoding (:class:`EvolverGeneration`) is the paper's: sampled at the scenario's
``temperature`` / ``top_p`` (``evolver.scenarios.<s>``), seeded; a second, greedy pass over the
same prompts records the output-space statistic (:func:`evolve_instructions`).

The model is reached only through ``generate_fn: Callable[[list[str]], list[str]]``
(one completion per prompt); :func:`make_generate_fn` builds one from
``teachfit.generation`` for the workflow, tests inject a fake. The rule function is
:func:`evolve_instructions`; equal-size sets are ``teachfit.studies.evolver.sets``,
data selection ``teachfit.training.selection``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.generation.base import SamplingConfig
from teachfit.generation.engines import BackendConfig
from teachfit.io import DataError, content_id, read_parquet, write_parquet
from teachfit.models import load_tokenizer
from teachfit.prompts import format_prompt, stop_strings
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

MARKER_RE = re.compile(
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
                     or MARKER_RE.fullmatch(lines[0].strip())):
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
    for match in MARKER_RE.finditer(text):
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


#: columns of a round's reply table (``evolve_round`` / ``auto_evol_round``), plus the carried columns
REPLY_COLUMNS = ("parent_id", "root_id", "round", "operation", "evolver", "parent", "prompt", "reply")


def _replies(records: pl.DataFrame, prompts: Sequence[str], outputs: Sequence[str | None],
             operations: Sequence[str], round: int, evolver: str) -> pl.DataFrame:
    if len(outputs) != records.height:
        raise ValueError(f"generate_fn returned {len(outputs)} outputs for {records.height} prompts")
    carried = [c for c in CARRIED_COLUMNS if c in records.columns]
    ids = records["id"].to_list()
    roots = records["root_id"].to_list() if "root_id" in records.columns else ids
    table = pl.DataFrame({
        "parent_id": ids,
        "root_id": [r or i for r, i in zip(roots, ids)],
        "round": [round] * records.height,
        "operation": list(operations),
        "evolver": [evolver] * records.height,
        "parent": records["instruction"].to_list(),
        "prompt": list(prompts),
        "reply": [None if o is None else str(o) for o in outputs],
    }, schema={"parent_id": pl.String, "root_id": pl.String, "round": pl.Int64, "operation": pl.String,
               "evolver": pl.String, "parent": pl.String, "prompt": pl.String, "reply": pl.String})
    return table.with_columns([records[c].cast(pl.String) for c in carried]) if carried else table


def evolve_round(records: pl.DataFrame, generate_fn: GenerateFn, ops: Sequence[str],
                 seed: int, round: int = 1, evolver: str = "evolver") -> pl.DataFrame:
    """One Evol-Instruct round over ``records`` (``id``, ``instruction``; ids unique).

    Returns one row per record (:data:`REPLY_COLUMNS` plus the carried columns): the parent's
    lineage, the operation drawn by :func:`assign_operations` with ``seed``, the evolving
    prompt and the evolver's raw reply (parsed and checked by the gate,
    :func:`teachfit.studies.evolver.gate.gate_replies`). Raises DataError on a malformed table,
    ValueError when ``generate_fn`` returns a different number of replies.
    """
    _check_records(records, f"evolve round {round}")
    operations = assign_operations(records["id"].to_list(), ops, seed, round)
    prompts = [build_evol_prompt(t, op) for t, op in zip(records["instruction"], operations)]
    outputs = generate_fn(prompts) if prompts else []
    return _replies(records, prompts, outputs, operations, round, evolver)


def auto_evol_round(records: pl.DataFrame, generate_fn: GenerateFn, seed: int, round: int = 1,
                    evolver: str = "evolver") -> pl.DataFrame:
    """One Auto Evol-Instruct round; same return shape as :func:`evolve_round` (operation
    ``auto_evol``; with a primer-capable ``generate_fn`` the reply is primed,
    :func:`primed_auto_evol`, and holds the primed headers).

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
    return _replies(records, prompts, outputs, operations, round, evolver)


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
    (:func:`teachfit.workflow.plan.scenario_settings`): ``operations`` (Evol-Instruct only),
    ``temperature`` and ``top_p`` (the evolution decoding; schema defaults 0.7 / 1.0 for
    Evol-Instruct and 0.7 / 0.95 for Auto Evol-Instruct, as the paper ran them, see
    :class:`EvolverGeneration`)."""

    method: str = field(metadata={"help": "evol_instruct | auto_evol", "choices": EVOL_METHODS})
    seed: int = field(metadata={"help": "run seed: the per-row operation draw and the sampling seed"})
    temperature: float = field(metadata={"help": "evolution sampling temperature (0 = greedy)"})
    top_p: float = field(metadata={"help": "evolution nucleus mass"})
    operations: list[str] | None = field(
        default=None,
        metadata={"help": "evol_instruct: operations drawn per row (evolver.scenarios.evol_instruct.operations); "
                          "auto_evol: none"},
    )
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
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"evolve: temperature >= 0 and 0 < top_p <= 1 required, got {self.temperature}, "
                             f"{self.top_p}")

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


#: the output-space statistic's length: the reference keeps the top-1 probability of the first
#: min(len, 5) generated tokens (HypherX/Evolution-Analysis ``Evol_Instruct/get_response_prob.py:61-66``)
FIRST_TOKENS = 5


@dataclass
class EvolverGeneration:
    """How the evolver decodes (the engine itself comes from ``teachfit.generation.engines``).

    ``prompt_format``, ``max_new_tokens``, ``seed``, ``temperature`` and ``top_p`` come from the
    config (the evolver model's kind, ``evolver.max_new_tokens``, ``seed``,
    ``evolver.scenarios.<s>.temperature`` / ``top_p``). The paper evolves at temperature 0.7,
    Auto Evol-Instruct with top_p 0.95 (HypherX/Evolution-Analysis README.md:28 runs
    ``Evol_Instruct/evol_instruct.py --temperature 0.7``, whose code default is 0.0 at l.162;
    ``Auto_Evol_Instruct/auto_evol_instruct.py:53`` samples with ``temperature`` default 0.7
    (l.164) and ``top_p=0.95``). Each sampled row is seeded from ``seed`` and its own prompt
    (:func:`teachfit.generation.base.row_seed`). ``logprobs``: record each generated token's
    top-1 log-probability under the unscaled (T = 1) distribution.
    """

    prompt_format: str = field(metadata={"help": "chat | raw | fewshot", "choices": PROMPT_FORMATS})
    max_new_tokens: int = field(metadata={"help": "completion length cap (tokens)"})
    seed: int = field(metadata={"help": "sampling seed (and the vLLM engine seed)"})
    temperature: float = field(metadata={"help": "0 = greedy"})
    top_p: float = field(metadata={"help": "nucleus sampling mass"})
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

    def greedy(self, max_new_tokens: int = FIRST_TOKENS) -> EvolverGeneration:
        """The output-space pass: the same prompts, greedy, log-probs on, ``max_new_tokens``
        (default :data:`FIRST_TOKENS`, capped by this setting's own cap)."""
        import dataclasses

        return dataclasses.replace(self, temperature=0.0, top_p=1.0, logprobs=True,
                                   max_new_tokens=min(max_new_tokens, self.max_new_tokens))


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
            self.tokenizer = load_tokenizer(model_dir)
        self.backend = backend
        self.supports_primer = not api
        self.sampling = SamplingConfig(
            temperature=settings.temperature, top_p=settings.top_p, n=1,
            max_new_tokens=settings.max_new_tokens, seed=settings.seed,
            stop=stop_strings(settings.prompt_format), logprobs=settings.logprobs,
        )
        self.top1: list[list[float]] = []

    def with_settings(self, settings: EvolverGeneration, desc: str | None = None) -> BackendGenerateFn:
        """Another ``generate_fn`` on the same engine and tokenizer (nothing is loaded again) with
        other decoding ``settings`` (the greedy output-space pass, :meth:`EvolverGeneration.greedy`)."""
        import copy

        other = copy.copy(self)
        other.settings = settings
        other.desc = desc or self.desc
        other.sampling = dataclasses_replace(self.sampling, temperature=settings.temperature, top_p=settings.top_p,
                                             max_new_tokens=settings.max_new_tokens, seed=settings.seed,
                                             logprobs=settings.logprobs)
        other.top1 = []
        return other

    def __call__(self, prompts: list[str], primer: str | Sequence[str] = "",
                 fewshot: Sequence[tuple[str, str]] = ()) -> list[str]:
        """One reply per prompt, in order. ``primer`` (one string, or one per prompt) is
        written at the start of the reply, after the prompt's generation header; ``fewshot``
        (prompt, reply) demonstrations precede the prompt (earlier chat turns, or few-shot
        blocks for base models). Raises ValueError for a primer or few-shot turns through an
        OpenAI-compatible endpoint."""
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
        config = BackendConfig.from_dict(dict(backend))
        api = config.backend == "openai"
        engine = config.build(model_dir, threads=threads, seed=settings.seed)
    else:
        engine = backend
        api = getattr(backend, "name", None) == "openai"
    return BackendGenerateFn(model_dir, settings, engine, desc=desc, api=api)


# --------------------------------------------------------------------------- rule evolve_instructions


def output_space_pass(gen_fn: Any, prompts: list[str], primer: str = "") -> list[list[float]]:
    """The output-space analysis's own greedy pass (HypherX/Evolution-Analysis
    ``Evol_Instruct/get_response_prob.py``: the evolution prompts again, temperature 0,
    ``logprobs=1``; l.61-66 keep the top-1 log-probability of the first ``min(len, 5)``
    generated tokens of each reply).

    ``gen_fn``: the evolution ``generate_fn`` (:class:`BackendGenerateFn`); the pass runs on its
    engine with :meth:`EvolverGeneration.greedy` settings, so only :data:`FIRST_TOKENS` new
    tokens are decoded per prompt (greedy decoding is deterministic step by step, so these are
    the first tokens of the full-length greedy reply the reference decodes; the other tokens are
    never used). ``primer``: the text the evolution pass starts each reply with (Auto
    Evol-Instruct's primed layout), so both passes continue the same text. Returns, per prompt,
    the top-1 log-probabilities (nats) of its first ``min(len, 5)`` generated tokens.
    """
    greedy = gen_fn.with_settings(gen_fn.settings.greedy(), desc=f"{gen_fn.desc} (greedy, output space)")
    if primer and getattr(greedy, "supports_primer", False):
        greedy(prompts, primer=primer)
    else:
        greedy(prompts)
    return [list(map(float, t[:FIRST_TOKENS])) for t in greedy.top1]


def evolve_instructions(previous: str | Path, model_dir: str | Path, replies: str | Path, top1: str | Path,
                        scenario: str, evolver: str, round: int, settings: Mapping[str, Any], max_new_tokens: int,
                        prompt_format: str, backend: Mapping[str, Any], seed: int,
                        threads: int = 1) -> pl.DataFrame:
    """Rule ``evolve_instructions``: one round of Evol-Instruct or Auto Evol-Instruct by one evolver.

    Hui et al. 2024, scenarios Evol-Instruct and Auto Evol-Instruct (reference code:
    HypherX/Evolution-Analysis ``Evol_Instruct/evol_instruct.py``,
    ``Auto_Evol_Instruct/auto_evol_instruct.py``).

    Inputs: ``previous`` (Parquet, columns ``id``, ``instruction``, optionally ``root_id`` and
    the carried columns; the seed set for round 1, round ``round - 1``'s valid instructions
    otherwise) and the evolver ``model_dir``. Params: ``scenario`` (evol_instruct | auto_evol),
    ``evolver`` (its alias), ``round`` (1-based), ``settings`` (:class:`EvolSettings` without
    method and seed: operations, temperature, top_p), ``max_new_tokens``, ``prompt_format``
    (chat | fewshot), ``backend`` (engine settings), ``seed``.

    Two passes over the same prompts, on one loaded engine:

    1. evolution, sampled at ``settings.temperature`` / ``top_p`` and seeded
       (:class:`EvolverGeneration`), with each generated token's top-1 log-probability;
    2. the output-space pass, greedy, :data:`FIRST_TOKENS` new tokens (:func:`output_space_pass`).

    Writes ``replies`` (one row per parent, :data:`REPLY_COLUMNS` plus the carried columns and
    ``scenario``; the gate, rule ``gate_instructions``, decides which are instructions) and
    ``top1`` (one row per parent: ``parent_id``; ``top1_logprobs``, nats per generated token of
    the sampled evolution reply (its first pass for a primed Auto Evol reply); ``first_top1_logprobs``,
    nats of the first ``min(len, 5)`` greedy tokens; ``evolver``, ``scenario``, ``round``).
    Returns the reply table. Raises DataError on an empty or malformed input table.
    """
    records = read_parquet(previous, required=["id", "instruction"])
    if records.height == 0:
        raise DataError(f"{previous}: empty instruction list; nothing to evolve "
                        f"(every evolution of the previous round was dropped?)")
    if "root_id" not in records.columns:
        records = records.with_columns(pl.col("id").alias("root_id"))
    cfg = EvolSettings.from_dict({"method": scenario, "seed": seed, **settings})
    generation = EvolverGeneration(prompt_format=prompt_format, max_new_tokens=max_new_tokens, seed=seed,
                                   temperature=cfg.temperature, top_p=cfg.top_p)
    gen_fn = make_generate_fn(model_dir, generation, backend, threads=threads,
                              desc=f"{scenario} r{round} {evolver}")
    if scenario == "evol_instruct":
        table = evolve_round(records, gen_fn, cfg.operations, cfg.seed, round, evolver)
        first = output_space_pass(gen_fn, table["prompt"].to_list())
    else:
        table = auto_evol_round(records, gen_fn, cfg.seed, round, evolver)
        first = output_space_pass(gen_fn, table["prompt"].to_list(), primer=AUTO_EVOL_PRIMER)
    table = table.with_columns(pl.lit(scenario).alias("scenario"))
    top1_table = pl.DataFrame({
        "parent_id": records["id"],
        # the first pass only: one reply per parent (a primed second Auto Evol pass is extra)
        "top1_logprobs": pl.Series([list(map(float, t)) for t in gen_fn.top1[: records.height]],
                                   dtype=pl.List(pl.Float64)),
        "first_top1_logprobs": pl.Series(first, dtype=pl.List(pl.Float64)),
    }).with_columns(pl.lit(evolver).alias("evolver"), pl.lit(scenario).alias("scenario"),
                    pl.lit(round).alias("round"))
    log.info("%s round %d (%s): %d replies (T=%g, top_p=%g); output-space pass: %d greedy tokens per prompt",
             scenario, round, evolver, table.height, cfg.temperature, cfg.top_p, FIRST_TOKENS)
    write_parquet(top1_table, top1)
    write_parquet(table, replies)
    return table
