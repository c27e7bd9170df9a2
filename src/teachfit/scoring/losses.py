"""Shared scoring engine: per-token losses of (instruction, response) pairs.

Definitions (all losses are mean per-token negative log-likelihoods in nats, never
exponentiated; PPL = exp(loss)). For an instruction ``Q`` and a response ``A``
under one scoring model:

* The **prompt** is ``Q`` formatted with ``settings.template``:

  - ``chat``: ``tokenizer.apply_chat_template([{"role": "user", "content": Q}],
    add_generation_prompt=True, tokenize=False)`` (the model's own template, e.g. a
    default system turn, the user turn, then the assistant header);
  - ``raw``: ``settings.raw_template.format(instruction=Q)`` (default ``"{instruction}\\n"``).

  The prompt text is tokenized without special tokens; if the tokenizer adds a
  BOS token on its own (``tokenizer("x")`` starts with BOS) and the rendered text
  does not already start with it, BOS is prepended. The response is tokenized on
  its own (no special tokens) and its ids are appended to the prompt ids, so the
  response tokens are *identical* in the conditional and the unconditional pass.
* **L(A|Q)**: mean NLL of the response tokens given the prompt.
* **L(Q)**: mean NLL of the instruction tokens, from the same forward pass. The
  instruction's character span inside the rendered prompt is found by rendering
  the template once with a sentinel (``prefix + Q + suffix`` is checked per
  example, with a fallback for templates that strip the content); the
  instruction tokens are the tokens whose ``offset_mapping`` start lies inside
  that span (template tokens are excluded). If nothing precedes the
  instruction (raw template, tokenizer without BOS), the start token below is
  prepended, so every instruction token is scored.
* **L(A)**: mean NLL of the same response tokens, with only a start token as
  context: the BOS token if the tokenizer adds one; otherwise (``start_token``)
  the tokenizer's ``bos_token`` or, failing that, its ``eos_token`` (``bos``,
  the default), or its ``eos_token`` (``eos``). So the first response token is
  conditioned on BOS only, and every response token is scored in both L(A|Q)
  and L(A) (IFD compares like with like).
* ``n_q_tokens`` / ``n_a_tokens``: numbers of scored instruction/response tokens.

Truncation: a pair whose prompt + response exceeds ``max_length`` tokens is cut
from the response end (``truncated=True``); L(A) uses the same truncated response
tokens. If the prompt alone exceeds ``max_length`` it is cut too (its instruction
tokens beyond the cut are dropped) and the response losses are NaN.
Empty responses (``""`` or no tokens) give ``loss_a_given_q = loss_a = NaN`` and
``empty_response=True``; an empty instruction gives ``loss_q = NaN``,
``n_q_tokens = 0``. Rows are never dropped and nothing crashes on them.

Two implementations share the tokenization above:

* :func:`score_pairs` – length-bucketed batches (sequences sorted by length and
  packed while ``rows × longest ≤ batch_tokens`` and the padded share of a batch
  is ≤ ``max_padding``); one joint pass per pair (prompt + response: L(Q) and
  L(A|Q)) and one pass of the response alone (L(A)); padding is masked with the
  attention mask and explicit position ids (right or left padding); the token
  prefix shared by all prompts (e.g. a default system turn) is run once and its
  KV cache reused (``share_prefix``); the LM head is applied only at the scored
  positions, in chunks of ``logit_chunk``.
* :func:`score_pairs_naive` – a per-example loop, three plain ``model(...)``
  forward passes per example (prompt only → L(Q); prompt + response → L(A|Q);
  start + response → L(A)), full logits. It is the reference the batched path
  is tested against.

Rule ``score_losses`` (:func:`score_losses`) writes these columns for every kept response under
one scorer; IFD (Li et al. 2024, "From Quantity to Quality"), IC-IFD (Hui et al. 2024), PPL and
CAR (Xu et al. 2024) derive from them in :mod:`teachfit.scoring.metrics`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, content_id, read_parquet, write_parquet
from teachfit.settings import from_dict as settings_from_dict

TEMPLATES = ("chat", "raw")
PADDING_SIDES = ("right", "left")
DTYPES = ("float32", "bfloat16", "float16")
START_TOKENS = ("bos", "eos")
SCORE_COLUMNS = (
    "loss_q", "loss_a_given_q", "loss_a", "n_q_tokens", "n_a_tokens", "truncated", "empty_response",
)
_SENTINEL = "\ue000TEACHFIT_INSTRUCTION\ue001"


class ScoringError(ValueError):
    """A model/tokenizer/template combination that cannot be scored; the message says why."""


@dataclass
class ScoringSettings:
    """Settings of the loss scoring engine (the ``scoring`` config section).

    ``max_length``, ``batch_tokens``, ``template`` and ``version`` are config keys and have no
    default here (tests and library users: ``ScoringSettings(**teachfit.config.defaults("scoring"))``).
    The other fields are not config keys: fixed semantics (``raw_template``, ``start_token``,
    ``dtype``) and performance knobs that do not change the numbers beyond float tolerance
    (``padding_side``, ``share_prefix``, ``max_padding``, ``logit_chunk``).
    Raises ``ValueError`` naming the field on a bad value.
    """

    max_length: int = field(
        metadata={"help": "max tokens of prompt + response; longer pairs are cut from the response end"},
    )
    batch_tokens: int = field(
        metadata={"help": "token budget of a batch: rows × longest sequence ≤ batch_tokens"},
    )
    template: str = field(metadata={"help": "prompt format", "choices": TEMPLATES})
    version: int = field(metadata={"help": "bump when the scoring semantics change"})
    raw_template: str = field(
        default="{instruction}\n",
        metadata={"help": "template=raw: format string with one {instruction}"},
    )
    padding_side: str = field(
        default="right",
        metadata={"help": "padding side of batches (results do not depend on it)", "choices": PADDING_SIDES},
    )
    start_token: str = field(
        default="bos",
        metadata={"help": "context token of L(A) when the tokenizer adds no BOS: bos = its "
                          "bos_token (else eos_token), eos = its eos_token", "choices": START_TOKENS},
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
        if self.template not in TEMPLATES:
            raise ValueError(f"scoring.template: {self.template!r} not allowed; allowed: {', '.join(TEMPLATES)}")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"scoring.padding_side: {self.padding_side!r} not allowed; "
                             f"allowed: {', '.join(PADDING_SIDES)}")
        if self.start_token not in START_TOKENS:
            raise ValueError(f"scoring.start_token: {self.start_token!r} not allowed; "
                             f"allowed: {', '.join(START_TOKENS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"scoring.dtype: {self.dtype!r} not allowed; allowed: {', '.join(DTYPES)}")
        if self.max_length < 2:
            raise ValueError(f"scoring.max_length: must be ≥ 2, got {self.max_length}")
        if not 0.0 <= self.max_padding <= 1.0:
            raise ValueError(f"scoring.max_padding: must be in [0, 1], got {self.max_padding}")
        if self.batch_tokens < 1 or self.logit_chunk < 1:
            raise ValueError("scoring.batch_tokens and scoring.logit_chunk must be ≥ 1")
        if self.raw_template.count("{instruction}") != 1:
            raise ValueError(
                f"scoring.raw_template: must contain '{{instruction}}' exactly once, got {self.raw_template!r}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ScoringSettings:
        return settings_from_dict(cls, d, "scoring")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return content_id(self.to_dict(), n=12)


# --------------------------------------------------------------------------- tokenization


@dataclass
class EncodedPair:
    """Token ids of one pair and the token spans to score (``[start, end)`` positions)."""

    joint: list[int]            # prompt ids + response ids (truncated)
    prompt_len: int
    q_span: tuple[int, int]     # scored instruction tokens in ``joint``
    a_span: tuple[int, int]     # response tokens in ``joint``
    alone: list[int]            # start token + response ids; response at [1, len)
    truncated: bool
    empty_response: bool


def adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer(text)`` prepends its BOS token on its own."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(ids) > 0 and ids[0] == bos


def start_token_id(tokenizer: Any, which: str = "bos") -> int:
    """The context token of L(A): ``bos`` = bos_token (else eos_token); ``eos`` = eos_token."""
    order = (tokenizer.eos_token_id,) if which == "eos" else (tokenizer.bos_token_id, tokenizer.eos_token_id)
    for tid in order:
        if tid is not None:
            return int(tid)
    raise ScoringError(f"tokenizer has no {'eos' if which == 'eos' else 'bos or eos'} token "
                       "to condition L(A) on")


class PromptFormatter:
    """Renders prompts and finds the instruction's character span in them."""

    def __init__(self, tokenizer: Any, settings: ScoringSettings, name: str = "model") -> None:
        self.tok = tokenizer
        self.settings = settings
        if settings.template == "chat":
            if not getattr(tokenizer, "chat_template", None):
                raise ScoringError(
                    f"{name}: tokenizer has no chat template; set scoring.template: raw "
                    "(or materialize the model, which adds the project default template)"
                )
            rendered = self._render(_SENTINEL)
            if rendered.count(_SENTINEL) != 1:
                raise ScoringError(f"{name}: chat template does not echo the user content exactly once")
            self.pre, self.post = rendered.split(_SENTINEL)
        else:
            self.pre, self.post = settings.raw_template.split("{instruction}")

    def _render(self, instruction: str) -> str:
        if self.settings.template == "raw":
            return self.pre + instruction + self.post
        return self.tok.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )

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


def _token_span(tokenizer: Any, text: str, q_start: int, q_end: int) -> tuple[list[int], int, int]:
    """Tokenize ``text`` (no special tokens); return ids and the token span of [q_start, q_end)."""
    if getattr(tokenizer, "is_fast", True):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        inside = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and q_start <= s < q_end]
        if inside:
            return ids, inside[0], inside[-1] + 1
        first_after = next((i for i, (s, _) in enumerate(enc["offset_mapping"]) if s >= q_end), len(ids))
        return ids, first_after, first_after
    # slow tokenizers: count the tokens of the prefix pieces
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    n_pre = len(tokenizer(text[:q_start], add_special_tokens=False)["input_ids"])
    n_q = len(tokenizer(text[:q_end], add_special_tokens=False)["input_ids"])
    return ids, n_pre, max(n_pre, n_q)


def encode_pairs(
    tokenizer: Any,
    instructions: Sequence[str],
    responses: Sequence[str],
    settings: ScoringSettings,
    name: str = "model",
) -> list[EncodedPair]:
    """Tokenize pairs exactly as both scoring implementations see them."""
    if len(instructions) != len(responses):
        raise ValueError(f"{len(instructions)} instructions but {len(responses)} responses")
    fmt = PromptFormatter(tokenizer, settings, name)
    bos = tokenizer.bos_token_id
    add_bos = adds_bos(tokenizer)
    start = bos if add_bos else start_token_id(tokenizer, settings.start_token)
    out: list[EncodedPair] = []
    for k, (q, a) in enumerate(zip(instructions, responses, strict=True)):
        if not isinstance(q, str) or not isinstance(a, str):
            raise DataError(f"pair {k}: instruction and response must be strings, got "
                            f"{type(q).__name__} / {type(a).__name__}")
        text, cs, ce = fmt.render(q)
        p_ids, qs, qe = _token_span(tokenizer, text, cs, ce)
        if (add_bos and (not p_ids or p_ids[0] != bos)) or qs == 0:
            # BOS the tokenizer would add, or (raw template, no BOS) the start token,
            # so that the first instruction token has a context
            p_ids = [bos if add_bos else start, *p_ids]
            qs, qe = qs + 1, qe + 1
        r_ids = list(tokenizer(a, add_special_tokens=False)["input_ids"]) if a else []
        empty = len(r_ids) == 0
        truncated = False
        max_len = settings.max_length
        if len(p_ids) + len(r_ids) > max_len:
            truncated = True
            if len(p_ids) > max_len:
                p_ids = p_ids[:max_len]
            r_ids = r_ids[: max_len - len(p_ids)]
        qs, qe = max(qs, 1), min(qe, len(p_ids))  # position 0 has no context
        qe = max(qs, qe)
        joint = p_ids + r_ids
        out.append(EncodedPair(
            joint=joint, prompt_len=len(p_ids), q_span=(qs, qe),
            a_span=(len(p_ids), len(joint)), alone=[start, *r_ids],
            truncated=truncated, empty_response=empty,
        ))
    return out


# --------------------------------------------------------------------------- model side


def load_scoring_model(model_dir: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """Load (model, tokenizer) for scoring, on :func:`teachfit.models.default_device`
    (right padding). Raises :class:`ScoringError` when ``model_dir`` has no ``config.json``."""
    from teachfit.models import load_causal_lm, load_tokenizer

    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise ScoringError(f"{path}: not a model directory (no config.json)")
    return load_causal_lm(path, dtype=dtype), load_tokenizer(path, padding_side="right")


class _Head:
    """Computes logits at selected hidden states: ``body(...)`` then the LM head.

    Checked once against the model's own forward; models whose logits are not
    ``softcap(lm_head(h))`` fall back to the full forward pass.
    """

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.split = False
        try:
            self.body = model.get_decoder()
            self.head = model.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            return
        if self.body is None or self.head is None:
            return
        vocab = int(self.head.weight.shape[0])
        ids = torch.arange(1, 9, device=model.device)[None] % vocab
        with torch.inference_mode():
            ref = model(input_ids=ids).logits.float()
            mine = self.logits(self.body(input_ids=ids).last_hidden_state).float()
        tol = 1e-4 if model.dtype == torch.float32 else 5e-2
        self.split = bool(torch.allclose(ref, mine, rtol=tol, atol=tol))

    def logits(self, hidden: Any) -> Any:
        import torch

        out = self.head(hidden)
        if self.softcap is not None:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


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


def span_nll_batched(
    model: Any,
    seqs: Sequence[list[int]],
    spans: Sequence[Sequence[tuple[int, int]]],
    settings: ScoringSettings,
    pad_id: int = 0,
    desc: str = "scoring",
    head: _Head | None = None,
    prefix: Sequence[int] = (),
) -> np.ndarray:
    """Sum of NLL and token count for every (sequence, span): array ``[n_seq, n_span, 2]``.

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

    head = head or _Head(model)
    n_spans = max((len(s) for s in spans), default=0)
    sums = np.zeros((len(seqs), n_spans), dtype=np.float64)
    counts = np.zeros((len(seqs), n_spans), dtype=np.int64)
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
        nll_parts = []
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
                nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, t[:, None])[:, 0]
                nll_parts.append(nll.double().cpu().numpy())
        nll_np = np.concatenate(nll_parts)
        np.add.at(sums.reshape(-1), grp_np, nll_np)
        np.add.at(counts.reshape(-1), grp_np, 1)
    return np.stack([sums, counts.astype(np.float64)], axis=-1)


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


def _frame(encoded: Sequence[EncodedPair], q: np.ndarray, aq: np.ndarray, a: np.ndarray) -> pl.DataFrame:
    """``q``, ``aq``, ``a``: arrays ``[n, 2]`` of (NLL sum, token count)."""
    return pl.DataFrame(
        {
            "loss_q": [_mean(*x) for x in q],
            "loss_a_given_q": [_mean(*x) for x in aq],
            "loss_a": [_mean(*x) for x in a],
            "n_q_tokens": [int(x[1]) for x in q],
            "n_a_tokens": [int(x[1]) for x in aq],
            "truncated": [e.truncated for e in encoded],
            "empty_response": [e.empty_response for e in encoded],
        },
        schema={
            "loss_q": pl.Float64, "loss_a_given_q": pl.Float64, "loss_a": pl.Float64,
            "n_q_tokens": pl.Int64, "n_a_tokens": pl.Int64,
            "truncated": pl.Boolean, "empty_response": pl.Boolean,
        },
    )


def _set_threads(threads: int) -> int:
    import torch

    before = torch.get_num_threads()
    if threads and threads > 0:
        torch.set_num_threads(int(threads))
    return before


def score_encoded(
    model: Any, tokenizer: Any, encoded: Sequence[EncodedPair], settings: ScoringSettings,
    head: _Head | None = None,
) -> pl.DataFrame:
    """Batched scoring of already-encoded pairs with a loaded model."""
    if not encoded:
        return _frame([], *(np.zeros((0, 2)),) * 3)
    head = head or _Head(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    k = shared_prefix_len(encoded) if settings.share_prefix and settings.padding_side == "right" else 0
    joint = span_nll_batched(
        model, [e.joint[k:] for e in encoded],
        [[(e.q_span[0] - k, e.q_span[1] - k), (e.a_span[0] - k, e.a_span[1] - k)] for e in encoded],
        settings, pad_id=pad, desc="score pairs (prompt + response)", head=head,
        prefix=encoded[0].joint[:k] if k else (),
    )
    alone = span_nll_batched(
        model, [e.alone for e in encoded], [[(1, len(e.alone))] for e in encoded],
        settings, pad_id=pad, desc="score pairs (response alone)", head=head,
    )
    return _frame(encoded, joint[:, 0], joint[:, 1], alone[:, 0])


def score_pairs(
    model_dir: str | Path,
    instructions: Sequence[str],
    responses: Sequence[str],
    settings: ScoringSettings,
    threads: int = 1,
) -> pl.DataFrame:
    """Batched L(Q), L(A|Q), L(A) (mean NLL per token, nats) of every pair under the model at
    ``model_dir``: one row per pair in input order, columns :data:`SCORE_COLUMNS` (see the module
    docstring for tokenization, truncation and NaN rules). ``threads`` sets torch's CPU threads for
    the call. Raises :class:`ScoringError` for a model/template combination that cannot be scored."""
    return _score_with(model_dir, instructions, responses, settings, threads,
                       lambda model, tok, encoded: score_encoded(model, tok, encoded, settings))


def _score_with(model_dir: str | Path, instructions: Sequence[str], responses: Sequence[str],
                settings: ScoringSettings, threads: int, score: Any) -> pl.DataFrame:
    """Load the scorer, encode the pairs, run ``score(model, tok, encoded)`` with ``threads``."""
    before = _set_threads(threads)
    try:
        model, tok = load_scoring_model(model_dir, settings.dtype)
        encoded = encode_pairs(tok, instructions, responses, settings, name=str(model_dir))
        return score(model, tok, encoded)
    finally:
        _set_threads(before)


def _naive_nll(model: Any, ids: list[int], span: tuple[int, int]) -> tuple[float, float]:
    import torch

    s, e = span
    if e <= s:
        return 0.0, 0.0
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0].float()
    logp = torch.log_softmax(logits[s - 1: e - 1], dim=-1)
    tgt = torch.tensor(ids[s:e], device=model.device)
    nll = -logp.gather(-1, tgt[:, None])[:, 0]
    return float(nll.double().sum()), float(e - s)


def score_encoded_naive(model: Any, encoded: Sequence[EncodedPair]) -> pl.DataFrame:
    """Reference scoring of encoded pairs: three plain forward passes per example."""
    from tqdm.auto import tqdm

    q, aq, a = [], [], []
    for e in tqdm(encoded, desc="score pairs (naive)", unit="pair", mininterval=2.0):
        q.append(_naive_nll(model, e.joint[: e.prompt_len], e.q_span))
        aq.append(_naive_nll(model, e.joint, e.a_span))
        a.append(_naive_nll(model, e.alone, (1, len(e.alone))))
    return _frame(encoded, np.array(q).reshape(-1, 2), np.array(aq).reshape(-1, 2),
                  np.array(a).reshape(-1, 2))


def score_pairs_naive(
    model_dir: str | Path,
    instructions: Sequence[str],
    responses: Sequence[str],
    settings: ScoringSettings,
    threads: int = 1,
) -> pl.DataFrame:
    """Reference for :func:`score_pairs`: one example and one plain forward pass per quantity
    (3 passes per example, full logits); same output."""
    return _score_with(model_dir, instructions, responses, settings, threads,
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


# --------------------------------------------------------------------------- rule score_losses


def score_losses(responses: str | Path, model_dir: str | Path, scores: str | Path,
                 scoring: dict[str, Any], scorer: str, threads: int) -> pl.DataFrame:
    """Rule ``score_losses``: L(Q), L(A|Q), L(A) of every kept response under scorer ``scorer``.

    ``responses`` is a Parquet table with ``id`` (unique), ``instruction`` and ``response``;
    ``model_dir`` the scorer's materialized model; ``scoring`` the validated ``scoring`` section
    (:class:`ScoringSettings`). Writes ``scores`` atomically, one row per response in input order:
    ``id``, the :data:`SCORE_COLUMNS` (losses are mean per-token NLLs in nats; token counts),
    ``scoring_settings_hash``, ``scoring_version`` and ``scorer``. IFD, IC-IFD, PPL and CAR
    derive from these columns downstream (:mod:`teachfit.scoring.metrics`).
    Raises :class:`~teachfit.io.DataError` on a missing / non-string column or duplicate ids,
    :class:`ScoringError` for a model/template combination that cannot be scored.
    """
    settings = ScoringSettings.from_dict(scoring)
    df = read_parquet(responses, required=["id", "instruction", "response"])
    require_text(df, ["instruction", "response"], responses)
    ids = df["id"].cast(pl.String)
    if ids.is_duplicated().any():
        raise DataError(f"{responses}: duplicate ids")
    losses = score_pairs(model_dir, df["instruction"].to_list(), df["response"].to_list(), settings,
                         threads=threads)
    out = pl.DataFrame({"id": ids}, schema={"id": pl.String}).hstack(losses).with_columns(
        pl.lit(settings.hash()).alias("scoring_settings_hash"),
        pl.lit(settings.version).alias("scoring_version"),
        pl.lit(scorer).alias("scorer"),
    )
    write_parquet(out, scores)
    return out
