"""Loss scoring: L(Q), L(A|Q), L(A) of (instruction, response) pairs under named conventions.

All losses are mean per-token negative log-likelihoods in nats (never exponentiated;
PPL = exp(loss)), each the mean NLL of token ``t`` given tokens ``< t`` over a span of
token positions; token 0 of a sequence is never scored (nothing predicts it). That is
``model(input_ids, labels=...).loss`` of transformers with the other positions set to
-100, which is what both reference implementations compute.

**Conventions** decide the token sequences and the scored spans; one batched engine
(:func:`span_nll_batched`) computes every convention. Each use chooses its convention in
its own config section (``evolver.selection.convention``, ``teacher.ifd_convention``,
``teacher.car.convention``); ``scoring.max_length.<convention>`` is each convention's window.

``evolution_analysis`` -- HypherX/Evolution-Analysis ``Evol_Instruct/eval_loss.py`` (HEAD
7595feb; ``select_data.py`` scores the same way), the code of Hui et al. 2024:

* text = ``instruction + "\\n" + response`` (with an input: ``instruction + "\\n" + input +
  "\\n" + response``, l.35-40); no template; every text is tokenized with the tokenizer's own
  special tokens (``add_special_tokens=True``: BOS only if the tokenizer adds one, l.46-48);
* ``nq`` = tokens of ``instruction[ + "\\n" + input]`` tokenized alone; the boundary is this
  COUNT laid over the joint ids (l.48, l.55-56), so what the first token of L(A|Q) is depends
  on the tokenizer (a GPT-2-style tokenizer scores the separator ``"\\n"`` in L(A|Q); Llama-3
  merges ``".\\n"`` into the last instruction token);
* L(Q) = joint tokens ``1..nq-1`` (l.61): the first instruction token is scored only when a
  BOS occupies position 0; L(A|Q) = joint tokens ``nq..end`` (l.63);
* L(A) = the response tokenized alone (special tokens included) scored on itself, tokens
  ``1..end`` (l.62): with a BOS every response token, without one all but the first;
* the reference does not truncate; here each of the three tokenizations is cut to
  ``max_length`` tokens from the right, as ``tokenizer(text, truncation=True,
  max_length=...)`` does with ``truncation_side="right"`` (forced, whatever the scorer's
  ``tokenizer_config.json`` says; every convention), and the row is flagged ``truncated``;
* IFD = L(A|Q)/L(A) (l.65), IC-IFD = L(A|Q)/(L(Q)·L(A)) (l.66, the division form; the product
  form of l.67 is commented out); a set's score is the mean of per-pair values (l.69-70).

``cherry`` -- tianyi-lab/Cherry_LLM ``cherry_seletion/data_analysis.py`` + ``data_by_IFD.py``
(HEAD 01fac8d), the code of Li et al. 2024 (IFD):

* prompt = the Stanford Alpaca no-input template ending in ``"### Response:"`` (the with-input
  template when the pair has an input; data_analysis.py:16-27, l.127-138); the response is
  appended with no separator; texts are tokenized with the tokenizer's own special tokens and
  ``truncation=True, max_length=...`` (right side: the response END is cut);
* ``P`` = tokens of the prompt alone (cut to ``max_length`` from the right); a pair with
  ``max_length - P <= 0`` (the prompt fills the window) gets no response losses
  (``prompt_overflow``; data_by_IFD.py:92, 113-114: dropped there);
* L(A|Q) = tokens of ``prompt + response`` from ``len(tok(prompt))`` to the truncated end
  (data_by_IFD.py:79-90, 95);
* L(A) = tokens of ``"### Response:" + response`` from ``M = len(tok("### Response:"))`` on,
  the text cut to ``max_length - P + 4`` tokens (data_analysis.py:150, data_by_IFD.py:94: the
  ``4`` is LLaMA's ``M``, ``<s>`` ``▁###`` ``▁Response`` ``:``); a pair whose ``P`` plus
  answer-alone response tokens exceed ``max_length`` is dropped (data_by_IFD.py:100-101; NaN
  losses, flagged ``prompt_overflow``). With ``M = 4`` nothing is dropped and both passes score
  the same ``<= max_length - P`` response tokens; with ``M = 3`` (SmolLM2) every pair whose
  answer-alone pass is cut is dropped, as the reference drops it. This is
  ``scoring.conventions.cherry.answer_window: reference``; ``response_marker_tokens`` is the
  generalisation: the window ``max_length - P + M``, so both passes score the same response
  tokens on any tokenizer, and nothing is dropped by this rule;
* the reference window is 512 tokens (scripts/cherry_analysis.sh, cherry_selection.sh);
* L(Q) is not part of the reference: here it is the instruction's tokens inside the Alpaca
  prompt of the joint pass (an extension, so that IC-IFD can be computed under this
  convention too).

``chat`` -- the scorer's own chat template, i.e. the tokens the student sees at SFT and at
inference (CAR's compatibility loss, Xu et al. 2024 Sec. 4):

* prompt ids = the inference prompt exactly: ``teachfit.prompts.format_prompt(tok, Q,
  fmt="chat")`` tokenized as :func:`teachfit.generation.base.encode_prompts` does (the
  tokenizer's BOS unless the rendered text already starts with it); response ids = the
  response tokenized alone without special tokens, appended (the SFT completion without its
  end-of-turn token, see :mod:`teachfit.training.sft`);
* L(Q) = the instruction's tokens inside the rendered prompt (found with the tokenizer's
  offsets; template tokens excluded); a first instruction token at position 0 is not scored;
* L(A|Q) = every response token;
* L(A) = the response with only the tokenizer's own start as context: ``[BOS] + response`` when
  the tokenizer adds a BOS (every response token scored, the same tokens as L(A|Q)); when it
  adds none, the response tokens alone, the first one unscored -- the rule of the
  ``evolution_analysis`` reference. No start token is ever invented: SmolLM2's
  ``bos_token`` ``<|im_start|>`` is a chat-turn marker the tokenizer never adds, and
  conditioning L(A) on it moved L(A) by up to 45 %;
* truncation: a pair longer than ``max_length`` is cut from the response end; L(A) uses the
  same kept response tokens. A prompt longer than ``max_length`` is cut (its instruction
  tokens beyond the cut are dropped) and the response losses are NaN (``prompt_overflow``).

**Token ranks** (for the Rank-Surprisal Ratio, Yang et al. 2026, arXiv 2601.14249): in the same
forward pass as L(A|Q), each scored response token's rank under the scorer: rank = 1 + the number
of vocabulary entries whose logit is strictly higher than the token's (float32 logits), so the
argmax token has rank 1 and tied logits share the best rank -- the rule of the reference code
(UmeanNever/RankSurprisalRatio ``rsr_cal.py``: ``1 + (topk > target).sum()``). Per pair:
``mean_rank_a_given_q`` (mean rank over the L(A|Q) tokens) and ``mean_rank_clip_a_given_q`` (the
same with every rank clipped at :data:`RANK_CLIP` = 100, the reference's ``rank_clip_r``);
NaN where L(A|Q) is NaN. The RSR derives from these in :mod:`teachfit.scoring.metrics`.

Per pair the engine reports ``loss_q``, ``loss_a_given_q``, ``loss_a`` (nats), ``n_q_tokens``,
``n_a_tokens`` (tokens scored in L(Q), L(A|Q)), ``n_response_tokens`` (the response tokenized
alone without special tokens, before any truncation), ``n_instruction_tokens`` (the
instruction field tokenized alone with the tokenizer's special tokens, input excluded: the
length baseline of ``select_data.py:54``), ``truncated``, ``prompt_overflow`` and
``empty_response``. An empty response gives ``loss_a_given_q = loss_a = NaN``; an empty span
gives NaN; rows are never dropped here (selection and the data metrics count and exclude them).

Two implementations share each convention's tokenization:

* :func:`score_pairs` -- length-bucketed batches (sequences sorted by length and packed while
  ``rows × longest ≤ batch_tokens`` and the padded share of a batch is ≤ ``max_padding``); one
  joint pass per pair (L(Q) and L(A|Q)) and one unconditioned pass (L(A)); padding masked with
  the attention mask and explicit position ids; the token prefix shared by all sequences (e.g.
  a system turn) is run once and its KV cache reused (``share_prefix``); the LM head is applied
  only at the scored positions, in chunks of ``logit_chunk``.
* :func:`score_pairs_naive` -- per example, one plain ``model(...)`` forward pass per quantity,
  full logits (the engine's own reference). ``tests/test_fidelity.py`` checks the batched
  engine against per-example implementations written from the two references.

Rule ``score_losses`` (:func:`score_losses`) writes these columns for every kept response under
one scorer and one convention; IFD, IC-IFD, PPL and CAR derive from them in
:mod:`teachfit.scoring.metrics`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, content_id, read_parquet, write_parquet
from teachfit.models import LogitHead, load_causal_lm, load_tokenizer, tokenizer_sides
from teachfit.prompts import format_prompt
from teachfit.settings import from_dict as settings_from_dict

#: Named scoring conventions (see the module docstring).
CONVENTIONS = ("evolution_analysis", "cherry", "chat")
PADDING_SIDES = ("right", "left")
#: ``scoring.conventions.cherry.answer_window`` (see the module docstring, ``cherry``).
CHERRY_ANSWER_WINDOWS = ("reference", "response_marker_tokens")
#: The answer-alone window's allowance of data_analysis.py:150 / data_by_IFD.py:94 (``+4``: LLaMA's
#: ``<s>`` ``▁###`` ``▁Response`` ``:``).
CHERRY_REFERENCE_MARKER_TOKENS = 4
DTYPES = ("float32", "bfloat16", "float16")
SCORE_COLUMNS = (
    "loss_q", "loss_a_given_q", "loss_a", "n_q_tokens", "n_a_tokens", "n_response_tokens",
    "n_instruction_tokens", "truncated", "prompt_overflow", "empty_response",
    "mean_rank_a_given_q", "mean_rank_clip_a_given_q",
)
#: Rank clip of the Rank-Surprisal Ratio (UmeanNever/RankSurprisalRatio ``rsr_cal.py``,
#: ``rank_clip_r=100``): ``mean_rank_clip_a_given_q`` averages ``min(rank, RANK_CLIP)``.
RANK_CLIP = 100
_SENTINEL = "\ue000TEACHFIT_INSTRUCTION\ue001"

#: Stanford Alpaca prompts as Cherry_LLM writes them (cherry_seletion/data_analysis.py:16-27).
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
#: Context of Cherry's unconditioned pass (data_analysis.py:120).
CHERRY_RESPONSE_PREFIX = "### Response:"


class ScoringError(ValueError):
    """A model/tokenizer/template combination that cannot be scored; the message says why."""


@dataclass
class ScoringSettings:
    """Settings of one scoring job: a convention and the engine's knobs.

    The rule passes :func:`convention_settings` of the ``scoring`` config section (``convention``,
    ``max_length`` of that convention, ``batch_tokens``, ``version``); those fields have no
    default here (tests and library users:
    ``ScoringSettings.from_dict(convention_settings(teachfit.schema.defaults("scoring"), "chat"))``).
    The other fields are not config keys: ``dtype`` and performance knobs that do not change
    the numbers beyond float tolerance (``padding_side``, ``share_prefix``, ``max_padding``,
    ``logit_chunk``). Raises ``ValueError`` naming the field on a bad value.
    """

    convention: str = field(metadata={"help": "scoring convention", "choices": CONVENTIONS})
    max_length: int = field(
        metadata={"help": "window of the convention in tokens; longer texts are cut from the right"},
    )
    batch_tokens: int = field(
        metadata={"help": "token budget of a batch: rows × longest sequence ≤ batch_tokens"},
    )
    version: int = field(metadata={"help": "bump when the scoring semantics change"})
    answer_window: str | None = field(
        default=None,
        metadata={"help": "cherry only (scoring.conventions.cherry.answer_window, required there): "
                          "the answer-alone window and skip rule", "choices": CHERRY_ANSWER_WINDOWS},
    )
    padding_side: str = field(
        default="right",
        metadata={"help": "padding side of batches (results do not depend on it)", "choices": PADDING_SIDES},
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "model weights dtype", "choices": DTYPES},
    )
    share_prefix: bool = field(
        default=True,
        metadata={"help": "run the token prefix shared by all prompts (system turn, template "
                          "header) once and reuse its KV cache (right padding only)"},
    )
    max_padding: float = field(
        default=0.1,
        metadata={"help": "max share of padded positions in a batch (a new batch starts beyond it)"},
    )
    logit_chunk: int = field(
        default=2048,
        metadata={"help": "scored positions per LM-head chunk (bounds logits memory)"},
    )

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"scoring.convention: {self.convention!r} not allowed; "
                             f"allowed: {', '.join(CONVENTIONS)}")
        if self.convention == "cherry" and self.answer_window not in CHERRY_ANSWER_WINDOWS:
            raise ValueError(f"scoring.conventions.cherry.answer_window: {self.answer_window!r} not allowed; "
                             f"allowed: {', '.join(CHERRY_ANSWER_WINDOWS)}")
        if self.convention != "cherry" and self.answer_window is not None:
            raise ValueError(f"scoring.answer_window: only the cherry convention has one, not {self.convention}")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"scoring.padding_side: {self.padding_side!r} not allowed; "
                             f"allowed: {', '.join(PADDING_SIDES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"scoring.dtype: {self.dtype!r} not allowed; allowed: {', '.join(DTYPES)}")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"scoring.max_length.{self.convention}: must be an integer ≥ 2, "
                             f"got {self.max_length!r}")
        if not 0.0 <= self.max_padding <= 1.0:
            raise ValueError(f"scoring.max_padding: must be in [0, 1], got {self.max_padding}")
        if self.batch_tokens < 1 or self.logit_chunk < 1:
            raise ValueError("scoring.batch_tokens and scoring.logit_chunk must be ≥ 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ScoringSettings:
        return settings_from_dict(cls, d, "scoring")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return content_id(self.to_dict(), n=12)


def convention_settings(section: Mapping[str, Any], convention: str) -> dict[str, Any]:
    """What one scoring job computes with: the ``scoring`` config section (``max_length`` per
    convention, ``batch_tokens``, ``version``; ``conventions.cherry.answer_window`` for cherry)
    narrowed to ``convention``, so that changing one convention's window re-runs only that
    convention's jobs. Raises ``ValueError`` for an
    unknown convention or a section without its window."""
    if convention not in CONVENTIONS:
        raise ValueError(f"scoring convention {convention!r} unknown; allowed: {', '.join(CONVENTIONS)}")
    windows = section["max_length"]
    if convention not in windows:
        raise ValueError(f"scoring.max_length: no window for convention {convention!r}; has {sorted(windows)}")
    job = {"convention": convention, "max_length": windows[convention],
           "batch_tokens": section["batch_tokens"], "version": section["version"]}
    if convention == "cherry":
        job["answer_window"] = section["conventions"]["cherry"]["answer_window"]
    return job


def check_scoring_section(section: Mapping[str, Any]) -> None:
    """Validate the ``scoring`` section for every convention (``ValueError`` naming the key)."""
    for convention in CONVENTIONS:
        ScoringSettings.from_dict(convention_settings(section, convention))


# --------------------------------------------------------------------------- tokenization


@dataclass
class EncodedPair:
    """Token ids of one pair under one convention and the spans to score (``[start, end)``).

    ``joint`` is the conditioned sequence (L(Q) over ``q_span``, L(A|Q) over ``a_span``; the
    tokens before ``prompt_len`` are the context of the response), ``alone`` the unconditioned
    one (L(A) over ``alone_span``). Spans never start at 0.
    """

    joint: list[int]
    prompt_len: int
    q_span: tuple[int, int]
    a_span: tuple[int, int]
    alone: list[int]
    alone_span: tuple[int, int]
    truncated: bool
    prompt_overflow: bool
    empty_response: bool
    n_response_tokens: int
    n_instruction_tokens: int


def adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer(text)`` prepends its BOS token on its own."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(ids) > 0 and ids[0] == bos


def _span(start: int, end: int) -> tuple[int, int]:
    """A scored span ``[start, end)`` with position 0 never scored and ``end ≥ start``."""
    start = max(start, 1)
    return start, max(start, end)


def _ids(tokenizer: Any, text: str, max_length: int | None = None, special: bool = True) -> list[int]:
    """``tokenizer(text)`` ids (special tokens as the tokenizer adds them), optionally with
    transformers' truncation to ``max_length`` tokens from the right, whatever the tokenizer's
    own ``truncation_side`` (:func:`teachfit.models.tokenizer_sides`)."""
    if max_length is None:
        return list(tokenizer(text, add_special_tokens=special)["input_ids"])
    with tokenizer_sides(tokenizer, truncation="right", padding=tokenizer.padding_side):
        return list(tokenizer(text, add_special_tokens=special, truncation=True,
                              max_length=max_length)["input_ids"])


def _token_span(tokenizer: Any, text: str, q_start: int, q_end: int,
                special: bool) -> tuple[list[int], int, int]:
    """Tokenize ``text``; return ids and the token span of the characters [q_start, q_end)."""
    if getattr(tokenizer, "is_fast", True):
        enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = enc["offset_mapping"]
        inside = [i for i, (s, e) in enumerate(offsets) if e > s and q_start <= s < q_end]
        if inside:
            return ids, inside[0], inside[-1] + 1
        first_after = next((i for i, (s, e) in enumerate(offsets) if e > s >= q_end), len(ids))
        return ids, first_after, first_after
    # slow tokenizers: count the tokens of the prefix pieces
    ids = _ids(tokenizer, text, special=special)
    n_pre = len(_ids(tokenizer, text[:q_start], special=special))
    n_q = len(_ids(tokenizer, text[:q_end], special=special))
    return ids, n_pre, max(n_pre, n_q)


class PromptFormatter:
    """Renders chat prompts (as :func:`teachfit.prompts.format_prompt` with ``fmt="chat"``) and
    finds the instruction's character span in them."""

    def __init__(self, tokenizer: Any, name: str = "model") -> None:
        self.tok = tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ScoringError(
                f"{name}: tokenizer has no chat template; the chat convention scores with the SFT "
                "template (materialize the model, which adds the project default template, or use "
                "the evolution_analysis / cherry convention)"
            )
        rendered = self._render(_SENTINEL)
        if rendered.count(_SENTINEL) != 1:
            raise ScoringError(f"{name}: chat template does not echo the user content exactly once")
        self.pre, self.post = rendered.split(_SENTINEL)

    def _render(self, instruction: str) -> str:
        return format_prompt(self.tok, instruction, fmt="chat")

    def render(self, instruction: str) -> tuple[str, int, int]:
        """Return ``(prompt_text, q_start, q_end)`` (character offsets of the instruction)."""
        text = self._render(instruction)
        if text == self.pre + instruction + self.post:
            return text, len(self.pre), len(self.pre) + len(instruction)
        # templates that transform the content (e.g. ``content | trim``)
        if text.startswith(self.pre) and text.endswith(self.post):
            middle = text[len(self.pre): len(text) - len(self.post)]
            core = instruction.strip()
            at = middle.find(core)
            if at >= 0:
                start = len(self.pre) + at
                return text, start, start + len(core)
        raise ScoringError(
            f"cannot locate the instruction inside the rendered prompt {text[:200]!r}…; "
            "the chat template changes the user content beyond stripping whitespace"
        )


def _encode_evolution_analysis(tok: Any, q: str, a: str, inp: str | None, max_len: int) -> EncodedPair:
    """Evolution-Analysis ``Evol_Instruct/eval_loss.py:35-63`` (see the module docstring)."""
    model_inst = f"{q}\n{inp}" if inp else q
    text = f"{model_inst}\n{a}"
    full = _ids(tok, text)
    full_a = _ids(tok, a) if a else []
    full_q = _ids(tok, model_inst)
    joint, alone = _ids(tok, text, max_len), (_ids(tok, a, max_len) if a else [])
    nq = min(len(_ids(tok, model_inst, max_len)), len(joint))
    r_ids = _ids(tok, a, special=False) if a else []
    empty = not r_ids
    return EncodedPair(
        joint=joint, prompt_len=nq, q_span=_span(1, nq),
        a_span=_span(nq, nq if empty else len(joint)),
        alone=alone, alone_span=_span(1, 1 if empty else len(alone)),
        truncated=len(full) > max_len or len(full_a) > max_len, prompt_overflow=len(full_q) >= max_len,
        empty_response=empty, n_response_tokens=len(r_ids), n_instruction_tokens=len(_ids(tok, q)),
    )


def _encode_cherry(tok: Any, q: str, a: str, inp: str | None, max_len: int,
                   answer_window: str = "reference") -> EncodedPair:
    """Cherry_LLM ``data_analysis.py:127-151`` + ``data_by_IFD.py:76-101`` (see the module docstring)."""
    template = ALPACA_PROMPT_INPUT if inp else ALPACA_PROMPT_NO_INPUT
    prompt = template.format_map({"instruction": q, "input": inp or ""})
    whole = prompt + a
    direct = CHERRY_RESPONSE_PREFIX + a
    n_prompt = len(_ids(tok, prompt, max_len))                  # P (data_by_IFD.py:76-77)
    overflow = max_len - n_prompt <= 0                          # data_by_IFD.py:92
    q_start = template.index("{instruction}")
    full, qs, qe = _token_span(tok, whole, q_start, q_start + len(q), special=True)
    truncated = len(full) > max_len
    joint = _ids(tok, whole, max_len)  # right truncation keeps the prefix: q span unchanged
    r_ids = _ids(tok, a, special=False) if a else []
    empty = not r_ids
    # start token = len(encode(text[: text.rfind(output)])) (data_by_IFD.py:82-85)
    s_whole = len(_ids(tok, whole[: whole.rfind(a)])) if a else len(joint)
    s_direct = len(_ids(tok, CHERRY_RESPONSE_PREFIX))
    allowance = CHERRY_REFERENCE_MARKER_TOKENS if answer_window == "reference" else s_direct
    alone = _ids(tok, direct, max(max_len - n_prompt + allowance, 1))  # data_by_IFD.py:94
    # data_by_IFD.py:100-101: dropped when the prompt and the answer-alone tokens exceed the window
    # (only when the marker is not 4 tokens: e.g. 3 on SmolLM2, whose answer-alone pass then keeps
    # one response token more than the joint pass)
    overflow = overflow or n_prompt + max(len(alone) - s_direct, 0) > max_len
    no_response = empty or overflow
    return EncodedPair(
        joint=joint, prompt_len=min(s_whole, len(joint)), q_span=_span(qs, min(qe, s_whole, len(joint))),
        a_span=_span(s_whole, s_whole if no_response else len(joint)),
        alone=alone, alone_span=_span(s_direct, s_direct if no_response else len(alone)),
        truncated=truncated, prompt_overflow=overflow, empty_response=empty,
        n_response_tokens=len(r_ids), n_instruction_tokens=len(_ids(tok, q)),
    )


def _encode_chat(tok: Any, fmt: PromptFormatter, q: str, a: str, add_bos: bool, max_len: int) -> EncodedPair:
    """The scorer's chat template, tokenized as the inference prompt (see the module docstring)."""
    text, cs, ce = fmt.render(q)
    bos = getattr(tok, "bos_token", None)
    special = not (bos and text.startswith(bos))  # teachfit.generation.base.encode_prompts
    p_ids, qs, qe = _token_span(tok, text, cs, ce, special=special)
    r_ids = _ids(tok, a, special=False) if a else []
    n_resp = len(r_ids)
    truncated = overflow = False
    if len(p_ids) + len(r_ids) > max_len:
        truncated = True
        if len(p_ids) >= max_len:
            overflow = True
            p_ids = p_ids[:max_len]
        r_ids = r_ids[: max_len - len(p_ids)]
    joint = p_ids + r_ids
    start = [tok.bos_token_id] if add_bos else []
    alone = start + r_ids
    return EncodedPair(
        joint=joint, prompt_len=len(p_ids), q_span=_span(qs, min(qe, len(p_ids))),
        a_span=_span(len(p_ids), len(joint)), alone=alone, alone_span=_span(len(start), len(alone)),
        truncated=truncated, prompt_overflow=overflow, empty_response=n_resp == 0,
        n_response_tokens=n_resp, n_instruction_tokens=len(_ids(tok, q)),
    )


def encode_pairs(
    tokenizer: Any,
    instructions: Sequence[str],
    responses: Sequence[str],
    settings: ScoringSettings,
    inputs: Sequence[str | None] | None = None,
    name: str = "model",
) -> list[EncodedPair]:
    """Tokenize pairs under ``settings.convention`` exactly as both scoring implementations see
    them (module docstring). ``inputs`` (optional, aligned): the Alpaca-style input of each
    pair, used by ``evolution_analysis`` and ``cherry`` as the references do (``None`` / ``""`` =
    no input); ``chat`` scores the instruction text as the student sees it and ignores them.
    Raises :class:`DataError` for non-string fields, ``ValueError`` for misaligned lists and
    :class:`ScoringError` for a chat convention without a chat template."""
    if len(instructions) != len(responses):
        raise ValueError(f"{len(instructions)} instructions but {len(responses)} responses")
    inputs = list(inputs) if inputs is not None else [None] * len(instructions)
    if len(inputs) != len(instructions):
        raise ValueError(f"{len(instructions)} instructions but {len(inputs)} inputs")
    conv, max_len = settings.convention, settings.max_length
    fmt = PromptFormatter(tokenizer, name) if conv == "chat" else None
    add_bos = adds_bos(tokenizer)
    out: list[EncodedPair] = []
    for k, (q, a, inp) in enumerate(zip(instructions, responses, inputs, strict=True)):
        if not isinstance(q, str) or not isinstance(a, str) or not (inp is None or isinstance(inp, str)):
            raise DataError(f"pair {k}: instruction, response (and input) must be strings, got "
                            f"{type(q).__name__} / {type(a).__name__} / {type(inp).__name__}")
        inp = inp if inp and inp.strip() else None
        if conv == "evolution_analysis":
            out.append(_encode_evolution_analysis(tokenizer, q, a, inp, max_len))
        elif conv == "cherry":
            out.append(_encode_cherry(tokenizer, q, a, inp, max_len, settings.answer_window))
        else:
            out.append(_encode_chat(tokenizer, fmt, q, a, add_bos, max_len))
    return out

# --------------------------------------------------------------------------- model side


def load_scoring_model(model_dir: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """Load (model, tokenizer) for scoring, on :func:`teachfit.models.default_device`
    (right padding). Raises :class:`ScoringError` when ``model_dir`` has no ``config.json``."""
    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise ScoringError(f"{path}: not a model directory (no config.json)")
    return load_causal_lm(path, dtype=dtype), load_tokenizer(path, padding_side="right")


def _pack(lengths: Sequence[int], batch_tokens: int, max_padding: float = 1.0) -> list[list[int]]:
    """Length-bucketed batches, longest first.

    A row joins the current batch while ``rows × longest ≤ batch_tokens`` and the
    padded share of the batch stays ≤ ``max_padding``; otherwise a new batch starts.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = waste = 0
    for i in order:
        n = lengths[i]
        if cur:
            rows = len(cur) + 1
            new_waste = waste + (longest - n)
            if rows * longest > batch_tokens or new_waste > max_padding * rows * longest:
                batches.append(cur)
                cur = []
        if not cur:
            longest, waste = n, 0
        else:
            waste += longest - n
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def token_nll_and_rank(logits: Any, targets: Any) -> tuple[Any, Any]:
    """NLL (nats) and rank of each target token: ``logits`` a float tensor ``[n, vocab]`` (the
    logits predicting each token), ``targets`` an integer tensor ``[n]``. NLL = logsumexp(logits)
    - logits[target]; rank = 1 + the number of vocabulary entries with a strictly higher logit
    (1 = the argmax; tied logits share the best rank, as UmeanNever/RankSurprisalRatio
    ``rsr_cal.py`` counts). Returns two tensors ``[n]`` (float, int64)."""
    target = logits.gather(-1, targets[:, None])
    nll = logits.logsumexp(dim=-1) - target[:, 0]
    rank = 1 + (logits > target).sum(dim=-1)
    return nll, rank


def span_nll_batched(
    model: Any,
    seqs: Sequence[list[int]],
    spans: Sequence[Sequence[tuple[int, int]]],
    settings: ScoringSettings,
    pad_id: int = 0,
    desc: str = "scoring",
    head: LogitHead | None = None,
    prefix: Sequence[int] = (),
) -> np.ndarray:
    """Sum of NLL, token count, sum of token ranks and sum of ranks clipped at :data:`RANK_CLIP`
    for every (sequence, span): array ``[n_seq, n_span, 4]`` (rank = 1 + vocabulary entries with
    a strictly higher logit; see the module docstring), all from one forward pass.

    Token ``j`` of a sequence is predicted from position ``j - 1``; spans hold
    token positions ``[start, end)`` with ``start ≥ 1``. With a ``prefix`` every
    sequence is read as ``prefix + seq`` (positions still relative to ``seq``):
    the prefix is run once and its key/value cache is shared by every row
    (right padding is then used, so sliding-window attention sees the same
    key distances as without padding).
    """
    import copy

    import torch
    from tqdm.auto import tqdm

    head = head or LogitHead(model)
    n_spans = max((len(s) for s in spans), default=0)
    sums = np.zeros((len(seqs), n_spans), dtype=np.float64)
    counts = np.zeros((len(seqs), n_spans), dtype=np.int64)
    rank_sums = np.zeros((len(seqs), n_spans), dtype=np.float64)
    clip_sums = np.zeros((len(seqs), n_spans), dtype=np.float64)
    device = model.device
    lengths = [len(s) for s in seqs]
    batches = [b for b in _pack(lengths, settings.batch_tokens, settings.max_padding)
               if max(lengths[i] for i in b) > 0]
    n_pre = len(prefix)
    left = settings.padding_side == "left" and n_pre == 0
    run = head.body if head.split else model
    prefix_cache = None
    if n_pre:
        with torch.inference_mode():
            prefix_cache = run(input_ids=torch.tensor([list(prefix)], device=device),
                               use_cache=True).past_key_values
    for batch in tqdm(batches, desc=desc, unit="batch", mininterval=2.0):
        t_max = max(lengths[i] for i in batch)
        ids = np.full((len(batch), t_max), pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), t_max), dtype=np.int64)
        rows, hpos, tgt, grp = [], [], [], []
        for r, i in enumerate(batch):
            seq = seqs[i]
            off = t_max - len(seq) if left else 0
            ids[r, off: off + len(seq)] = seq
            mask[r, off: off + len(seq)] = 1
            for k, (s, e) in enumerate(spans[i]):
                if e <= s:
                    continue
                if s < 1:
                    raise ValueError(f"span {(s, e)} starts at 0: the first token has no context")
                pos = np.arange(s, e)
                rows.append(np.full(e - s, r))
                hpos.append(off + pos - 1)
                tgt.append(np.asarray(seq[s:e]))
                grp.append(np.full(e - s, i * n_spans + k))
        if not rows:
            continue
        rows_t = torch.from_numpy(np.concatenate(rows)).to(device)
        hpos_t = torch.from_numpy(np.concatenate(hpos)).to(device)
        tgt_t = torch.from_numpy(np.concatenate(tgt)).to(device)
        grp_np = np.concatenate(grp)
        ids_t = torch.from_numpy(ids).to(device)
        mask_t = torch.from_numpy(mask).to(device)
        position_ids = n_pre + (mask_t.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"input_ids": ids_t, "position_ids": position_ids}
        if n_pre:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(batch))
            ones = torch.ones((len(batch), n_pre), dtype=mask_t.dtype, device=device)
            kwargs.update(attention_mask=torch.cat([ones, mask_t], dim=1), past_key_values=cache,
                          use_cache=True)
        else:
            kwargs.update(attention_mask=mask_t, use_cache=False)
        nll_parts, rank_parts = [], []
        with torch.inference_mode():
            out = run(**kwargs)
            full = out.last_hidden_state if head.split else out.logits
            del out, kwargs
            selected = full[rows_t, hpos_t]
            del full
            for c in range(0, selected.shape[0], settings.logit_chunk):
                chunk = selected[c: c + settings.logit_chunk]
                logits = (head.logits(chunk) if head.split else chunk).float()
                t = tgt_t[c: c + settings.logit_chunk]
                nll, rank = token_nll_and_rank(logits, t)
                nll_parts.append(nll.double().cpu().numpy())
                rank_parts.append(rank.cpu().numpy())
        nll_np = np.concatenate(nll_parts)
        rank_np = np.concatenate(rank_parts).astype(np.float64)
        np.add.at(sums.reshape(-1), grp_np, nll_np)
        np.add.at(counts.reshape(-1), grp_np, 1)
        np.add.at(rank_sums.reshape(-1), grp_np, rank_np)
        np.add.at(clip_sums.reshape(-1), grp_np, np.minimum(rank_np, RANK_CLIP))
    return np.stack([sums, counts.astype(np.float64), rank_sums, clip_sums], axis=-1)


def shared_prefix_len(encoded: Sequence[EncodedPair], min_len: int = 2) -> int:
    """Tokens that every joint sequence starts with and that precede every scored token.

    Capped so that each pair keeps ≥ 1 token and the position predicting its first
    instruction token (``q_span[0] - 1``) lies after the prefix; 0 if shorter than ``min_len``.
    """
    if not encoded:
        return 0
    first = encoded[0].joint
    n = min(min(len(e.joint) for e in encoded) - 1, min(e.q_span[0] for e in encoded) - 1)
    k = 0
    while k < n and all(e.joint[k] == first[k] for e in encoded):
        k += 1
    return k if k >= min_len else 0


def _mean(total: float, n: float) -> float:
    return float(total / n) if n > 0 else math.nan


_FRAME_SCHEMA = {
    "loss_q": pl.Float64, "loss_a_given_q": pl.Float64, "loss_a": pl.Float64,
    "n_q_tokens": pl.Int64, "n_a_tokens": pl.Int64, "n_response_tokens": pl.Int64,
    "n_instruction_tokens": pl.Int64, "truncated": pl.Boolean, "prompt_overflow": pl.Boolean,
    "empty_response": pl.Boolean, "mean_rank_a_given_q": pl.Float64, "mean_rank_clip_a_given_q": pl.Float64,
}


def _frame(encoded: Sequence[EncodedPair], q: np.ndarray, aq: np.ndarray, a: np.ndarray) -> pl.DataFrame:
    """``q``, ``a``: arrays ``[n, 2]`` of (NLL sum, token count); ``aq``: ``[n, 4]`` of (NLL sum,
    token count, rank sum, clipped rank sum)."""
    return pl.DataFrame(
        {
            "loss_q": [_mean(*x) for x in q],
            "loss_a_given_q": [_mean(x[0], x[1]) for x in aq],
            "loss_a": [_mean(*x) for x in a],
            "n_q_tokens": [int(x[1]) for x in q],
            "n_a_tokens": [int(x[1]) for x in aq],
            "n_response_tokens": [e.n_response_tokens for e in encoded],
            "n_instruction_tokens": [e.n_instruction_tokens for e in encoded],
            "truncated": [e.truncated for e in encoded],
            "prompt_overflow": [e.prompt_overflow for e in encoded],
            "empty_response": [e.empty_response for e in encoded],
            "mean_rank_a_given_q": [_mean(x[2], x[1]) for x in aq],
            "mean_rank_clip_a_given_q": [_mean(x[3], x[1]) for x in aq],
        },
        schema=_FRAME_SCHEMA,
    )


def _set_threads(threads: int) -> int:
    import torch

    before = torch.get_num_threads()
    if threads and threads > 0:
        torch.set_num_threads(int(threads))
    return before


def score_encoded(
    model: Any, tokenizer: Any, encoded: Sequence[EncodedPair], settings: ScoringSettings,
    head: LogitHead | None = None,
) -> pl.DataFrame:
    """Batched scoring of already-encoded pairs with a loaded model."""
    if not encoded:
        return _frame([], np.zeros((0, 2)), np.zeros((0, 4)), np.zeros((0, 2)))
    head = head or LogitHead(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    k = shared_prefix_len(encoded) if settings.share_prefix and settings.padding_side == "right" else 0
    joint = span_nll_batched(
        model, [e.joint[k:] for e in encoded],
        [[(e.q_span[0] - k, e.q_span[1] - k), (e.a_span[0] - k, e.a_span[1] - k)] for e in encoded],
        settings, pad_id=pad, desc=f"score pairs ({settings.convention}: prompt + response)", head=head,
        prefix=encoded[0].joint[:k] if k else (),
    )
    alone = span_nll_batched(
        model, [e.alone for e in encoded], [[e.alone_span] for e in encoded],
        settings, pad_id=pad, desc=f"score pairs ({settings.convention}: response alone)", head=head,
    )
    return _frame(encoded, joint[:, 0, :2], joint[:, 1], alone[:, 0, :2])


def score_pairs(
    model_dir: str | Path,
    instructions: Sequence[str],
    responses: Sequence[str],
    settings: ScoringSettings,
    threads: int = 1,
    inputs: Sequence[str | None] | None = None,
) -> pl.DataFrame:
    """Batched L(Q), L(A|Q), L(A) (mean NLL per token, nats) of every pair under the model at
    ``model_dir`` and ``settings.convention``: one row per pair in input order, columns
    :data:`SCORE_COLUMNS` (see the module docstring for tokenization, truncation and NaN rules).
    ``inputs``: optional Alpaca-style inputs (:func:`encode_pairs`). ``threads`` sets torch's CPU
    threads for the call. Raises :class:`ScoringError` for a model/template combination that
    cannot be scored."""
    return _score_with(model_dir, instructions, responses, settings, threads, inputs,
                       lambda model, tok, encoded: score_encoded(model, tok, encoded, settings))


def _score_with(model_dir: str | Path, instructions: Sequence[str], responses: Sequence[str],
                settings: ScoringSettings, threads: int, inputs: Sequence[str | None] | None,
                score: Any) -> pl.DataFrame:
    """Load the scorer, encode the pairs, run ``score(model, tok, encoded)`` with ``threads``."""
    before = _set_threads(threads)
    try:
        model, tok = load_scoring_model(model_dir, settings.dtype)
        encoded = encode_pairs(tok, instructions, responses, settings, inputs=inputs, name=str(model_dir))
        return score(model, tok, encoded)
    finally:
        _set_threads(before)


def _naive_nll(model: Any, ids: list[int], span: tuple[int, int]) -> tuple[float, float, float, float]:
    """(NLL sum, tokens, rank sum, clipped rank sum) of ``span`` from one plain forward pass."""
    import torch

    s, e = span
    if e <= s:
        return 0.0, 0.0, 0.0, 0.0
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0].float()
    logp = torch.log_softmax(logits[s - 1: e - 1], dim=-1)
    tgt = torch.tensor(ids[s:e], device=model.device)
    nll = -logp.gather(-1, tgt[:, None])[:, 0]
    _, rank = token_nll_and_rank(logits[s - 1: e - 1], tgt)
    rank = rank.double()
    return (float(nll.double().sum()), float(e - s), float(rank.sum()),
            float(rank.clamp(max=RANK_CLIP).sum()))


def score_encoded_naive(model: Any, encoded: Sequence[EncodedPair]) -> pl.DataFrame:
    """The engine's reference on encoded pairs: one plain forward pass per quantity and example
    (the instruction part alone for L(Q), the joint sequence for L(A|Q), the unconditioned one
    for L(A)), full logits."""
    from tqdm.auto import tqdm

    q, aq, a = [], [], []
    for e in tqdm(encoded, desc="score pairs (naive)", unit="pair", mininterval=2.0):
        q.append(_naive_nll(model, e.joint[: max(e.prompt_len, e.q_span[1])], e.q_span))
        aq.append(_naive_nll(model, e.joint, e.a_span))
        a.append(_naive_nll(model, e.alone, e.alone_span))
    return _frame(encoded, np.array(q).reshape(-1, 4)[:, :2], np.array(aq).reshape(-1, 4),
                  np.array(a).reshape(-1, 4)[:, :2])


def score_pairs_naive(
    model_dir: str | Path,
    instructions: Sequence[str],
    responses: Sequence[str],
    settings: ScoringSettings,
    threads: int = 1,
    inputs: Sequence[str | None] | None = None,
) -> pl.DataFrame:
    """Reference for :func:`score_pairs`: one example and one plain forward pass per quantity
    (3 passes per example, full logits); same tokenization, same output."""
    return _score_with(model_dir, instructions, responses, settings, threads, inputs,
                       lambda model, tok, encoded: score_encoded_naive(model, encoded))


def require_text(df: pl.DataFrame, cols: Sequence[str], where: str | Path) -> None:
    """Raise :class:`~teachfit.io.DataError` unless every column of ``cols`` holds strings (no nulls)."""
    for col in cols:
        if df.schema[col] != pl.String:
            raise DataError(f"{where}: column {col!r} must hold strings, got {df.schema[col]}")
        nulls = df[col].null_count()
        if nulls:
            first = df.with_row_index("_row").filter(pl.col(col).is_null())["_row"][0]
            raise DataError(f"{where}: column {col!r} is null in {nulls} row(s) (first: row {first})")


def reference_fields(df: pl.DataFrame, convention: str) -> tuple[list[str], list[str | None]]:
    """The (instruction, input) each pair is scored with under ``convention``.

    ``chat`` scores the ``instruction`` column (the text the student sees: the instruction and
    any input joined by :func:`teachfit.seeds.combine`). The reference conventions
    (``evolution_analysis``, ``cherry``) format instruction and input themselves, so rows whose
    ``input`` column holds text are scored with ``raw_instruction`` and ``input`` (both columns
    come from :func:`teachfit.seeds.load_seeds`); other rows with ``instruction`` and no input.
    """
    instructions = df["instruction"].to_list()
    if convention == "chat" or "input" not in df.columns or "raw_instruction" not in df.columns:
        return instructions, [None] * df.height
    qs: list[str] = []
    inputs: list[str | None] = []
    for q, raw, inp in zip(instructions, df["raw_instruction"].to_list(), df["input"].to_list(), strict=True):
        if isinstance(inp, str) and inp.strip() and isinstance(raw, str) and raw.strip():
            qs.append(raw)
            inputs.append(inp)
        else:
            qs.append(q)
            inputs.append(None)
    return qs, inputs


# --------------------------------------------------------------------------- rule score_losses


def score_losses(responses: str | Path, model_dir: str | Path, scores: str | Path,
                 scoring: dict[str, Any], scorer: str, threads: int) -> pl.DataFrame:
    """Rule ``score_losses``: L(Q), L(A|Q), L(A) of every kept response under scorer ``scorer``
    and one convention.

    ``responses`` is a Parquet table with ``id`` (unique), ``instruction`` and ``response``
    (optional ``raw_instruction`` + ``input``: see :func:`reference_fields`); ``model_dir`` the
    scorer's materialized model; ``scoring`` the job's settings (:func:`convention_settings`:
    ``convention``, its ``max_length``, ``batch_tokens``, ``version``; :class:`ScoringSettings`).
    Writes ``scores`` atomically, one row per response in input order: ``id``, the
    :data:`SCORE_COLUMNS` (losses are mean per-token NLLs in nats; token counts; flags),
    ``convention``, ``scoring_settings_hash``, ``scoring_version`` and ``scorer``. IFD, IC-IFD,
    PPL and CAR derive from these columns downstream (:mod:`teachfit.scoring.metrics`).
    Raises :class:`~teachfit.io.DataError` on a missing / non-string column or duplicate ids,
    :class:`ScoringError` for a model/template combination that cannot be scored.
    """
    settings = ScoringSettings.from_dict(scoring)
    df = read_parquet(responses, required=["id", "instruction", "response"])
    require_text(df, ["instruction", "response"], responses)
    ids = df["id"].cast(pl.String)
    if ids.is_duplicated().any():
        raise DataError(f"{responses}: duplicate ids")
    qs, inputs = reference_fields(df, settings.convention)
    losses = score_pairs(model_dir, qs, df["response"].to_list(), settings, threads=threads, inputs=inputs)
    out = pl.DataFrame({"id": ids}, schema={"id": pl.String}).hstack(losses).with_columns(
        pl.lit(settings.convention).alias("convention"),
        pl.lit(settings.hash()).alias("scoring_settings_hash"),
        pl.lit(settings.version).alias("scoring_version"),
        pl.lit(scorer).alias("scorer"),
    )
    write_parquet(out, scores)
    return out
