"""LLM-judge scores and reward-model scores of responses.

Two methods (``JudgeSettings.method``):

* ``rating`` – an instruct model is asked for a rating and the score is the
  probability-weighted rating over the rating tokens:
  ``score = Σ_k v_k · softmax_k(z)``, where ``z`` are the next-token logits of the
  rating tokens (``ratings``, default ``"1"…"5"``, values ``v_k = float(rating)``)
  at the last prompt position, the softmax taken over the rating tokens only. So
  a score lies in ``[min v, max v]`` (``[1, 5]`` by default). Every rating string
  must be exactly one token of the judge's tokenizer (checked; a clear error
  otherwise). Prompts are built with the judge's chat template (user turn +
  generation prompt), see :data:`PROMPTS`; batches are left-padded with explicit
  position ids and one forward pass per batch computes only the last position's
  logits. Prompts longer than ``max_length`` tokens keep their *last*
  ``max_length`` tokens (the rating question sits at the end) and are flagged.
* ``seq_cls`` – a reward model with a sequence-classification head (e.g.
  Skywork-Reward, ArmoRM with ``trust_remote_code``): the (instruction, response)
  conversation is formatted with the model's chat template (or as a text pair for
  encoder models without one) and the score is the model output's ``score``
  attribute when it has one (ArmoRM), else its single logit (a head with more than
  one logit and no ``score`` is refused). The model loads with its models entry's
  ``trust_remote_code`` and is refused when its weights do not fit the class
  (:func:`teachfit.models.load_pretrained`). Decoder models are
  left-padded and pooled at the last position; encoders are right-padded and get every
  input the tokenizer makes for the pair (``token_type_ids``: the response is segment B, as
  ``model(**tok(q, a))``; vllm#19988); only inputs the model's ``forward`` has no parameter for
  are left out. A conversation longer than ``max_length`` loses the end of its response.

Rule ``score_rewards`` (:mod:`teachfit.scoring.rewards`) scores generated responses with
either method (Xu et al. 2024, "Stronger models are not stronger teachers", rate every
response with a reward model).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from teachfit.generation.engines import BackendConfig
from teachfit.io import DataError, content_id
from teachfit.models import (
    default_device,
    device_placement,
    load_causal_lm,
    load_pretrained,
    load_tokenizer,
    model_name,
    tokenizer_sides,
)
from teachfit.scoring.losses import adds_bos
from teachfit.settings import from_dict as settings_from_dict

METHODS = ("rating", "seq_cls")
DTYPES = ("float32", "bfloat16", "float16")
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "electra", "distilbert",
                 "modernbert", "albert")

PROMPTS: dict[str, tuple[str, str]] = {
    # prompt_id: (kind, template with {instruction} / {response} / {lo} / {hi})
    "quality_v1": (
        "quality",
        "Please act as an impartial judge and evaluate the quality of the response that an AI "
        "assistant gave to the instruction below. Consider helpfulness, correctness, relevance, "
        "depth and clarity. Rate the response on a scale of {lo} to {hi}, where {lo} means very poor "
        "and {hi} means excellent.\n\n"
        "[Instruction]\n{instruction}\n\n[Response]\n{response}\n\n"
        "Reply with a single number from {lo} to {hi} and nothing else.",
    ),
    "difficulty_v1": (
        "difficulty",
        "Rate how difficult the following instruction is for an AI assistant to answer well, on a "
        "scale of {lo} to {hi}, where {lo} means very easy (a short, well-known fact) and {hi} means "
        "very hard (it needs expert knowledge, multi-step reasoning or long, careful writing).\n\n"
        "[Instruction]\n{instruction}\n\n"
        "Reply with a single number from {lo} to {hi} and nothing else.",
    ),
}


class JudgeError(ValueError):
    """A judge model/tokenizer/prompt combination that cannot work; the message says why."""


@dataclass
class JudgeSettings:
    """How a judge scores (see the module docstring).

    ``method``, ``batch_size`` and ``version`` come from the config (``teacher.reward``:
    ``type`` judge -> ``rating``, classifier -> ``seq_cls``) and have no default here. The other
    fields are not config keys: the rating scale, the prompt text version, the prompt token limit
    and the weights dtype are fixed semantics of the judge (``trust_remote_code`` is the model's:
    its ``models`` entry, recorded in the materialized model's manifest).
    Raises ``ValueError`` naming the field on a bad value.
    """

    method: str = field(
        metadata={"help": "rating: LLM judge over rating tokens; seq_cls: reward model", "choices": METHODS},
    )
    batch_size: int = field(metadata={"help": "prompts per forward pass"})
    version: int = field(metadata={"help": "bump when the judge semantics change"})
    ratings: list[str] = field(
        default_factory=lambda: ["1", "2", "3", "4", "5"],
        metadata={"help": "rating strings (numeric, one token each)"},
    )
    prompt_id: str = field(
        default="quality_v1",
        metadata={"help": "judge prompt text version", "choices": tuple(PROMPTS)},
    )
    max_length: int = field(
        default=2048,
        metadata={"help": "max prompt tokens (longer prompts keep their last tokens, flagged)"},
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "model weights dtype", "choices": DTYPES},
    )

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"judge.method: {self.method!r} not allowed; allowed: {', '.join(METHODS)}")
        if self.prompt_id not in PROMPTS:
            raise ValueError(f"judge.prompt_id: {self.prompt_id!r} not known; allowed: {', '.join(PROMPTS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"judge.dtype: {self.dtype!r} not allowed; allowed: {', '.join(DTYPES)}")
        if len(self.ratings) < 2 or len(set(self.ratings)) != len(self.ratings):
            raise ValueError(f"judge.ratings: need ≥ 2 distinct rating strings, got {self.ratings}")
        for r in self.ratings:
            try:
                float(r)
            except (TypeError, ValueError):
                raise ValueError(f"judge.ratings: {r!r} is not a number") from None
        if self.max_length < 1 or self.batch_size < 1:
            raise ValueError("judge.max_length and judge.batch_size must be ≥ 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> JudgeSettings:
        return settings_from_dict(cls, d, "judge")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return content_id(self.to_dict(), n=12)

    @property
    def values(self) -> np.ndarray:
        return np.array([float(r) for r in self.ratings], dtype=np.float64)


# --------------------------------------------------------------------------- prompts


def _scale(ratings: Sequence[str]) -> tuple[str, str]:
    vals = sorted(ratings, key=float)
    return vals[0], vals[-1]


def _chat(tokenizer: Any, text: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return f"{text}\n\nRating: "


def _template(prompt_id: str, kind: str) -> str:
    if prompt_id not in PROMPTS:
        raise JudgeError(f"prompt_id {prompt_id!r} not known; allowed: {', '.join(PROMPTS)}")
    got, text = PROMPTS[prompt_id]
    if got != kind:
        allowed = [k for k, (g, _) in PROMPTS.items() if g == kind]
        raise JudgeError(f"prompt_id {prompt_id!r} is a {got} prompt; use one of {allowed} here")
    return text


def reward_prompt(tokenizer: Any, instruction: str, response: str, prompt_id: str = "quality_v1",
                  ratings: Sequence[str] = ("1", "2", "3", "4", "5")) -> str:
    """Chat-formatted prompt asking for a quality rating of ``response`` to ``instruction``."""
    lo, hi = _scale(ratings)
    body = _template(prompt_id, "quality").format(instruction=instruction, response=response, lo=lo, hi=hi)
    return _chat(tokenizer, body)


def difficulty_prompt(tokenizer: Any, instruction: str, prompt_id: str = "difficulty_v1",
                      ratings: Sequence[str] = ("1", "2", "3", "4", "5")) -> str:
    """Chat-formatted prompt asking for the difficulty of ``instruction``."""
    lo, hi = _scale(ratings)
    body = _template(prompt_id, "difficulty").format(instruction=instruction, lo=lo, hi=hi)
    return _chat(tokenizer, body)


# --------------------------------------------------------------------------- rating judge


def rating_token_ids(tokenizer: Any, ratings: Sequence[str], name: str = "judge") -> list[int]:
    """The single token id of each rating string; raises JudgeError otherwise."""
    ids = []
    for r in ratings:
        toks = tokenizer(r, add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            pieces = tokenizer.convert_ids_to_tokens(toks)
            raise JudgeError(
                f"{name}: rating {r!r} is {len(toks)} tokens {pieces} under this tokenizer; every "
                "rating must be a single token (choose other judge.ratings or another judge model)"
            )
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        raise JudgeError(f"{name}: ratings {list(ratings)} map to repeated token ids {ids}")
    return ids


def _encode_prompts(tokenizer: Any, prompts: Sequence[str],
                    max_length: int | None) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of each prompt (BOS added as the tokenizer would); keep the last ``max_length``."""
    bos = tokenizer.bos_token_id
    add_bos = adds_bos(tokenizer)
    seqs, truncated = [], []
    for p in prompts:
        ids = list(tokenizer(p, add_special_tokens=False)["input_ids"])
        if add_bos and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if not ids:
            raise JudgeError("empty judge prompt")
        truncated.append(max_length is not None and len(ids) > max_length)
        seqs.append(ids[-max_length:] if max_length is not None else ids)
    return seqs, np.array(truncated, dtype=bool)


def last_position_logits(model: Any, tokenizer: Any, seqs: Sequence[Sequence[int]], batch_size: int,
                         desc: str) -> Iterator[tuple[list[int], Any]]:
    """Yield ``(rows, logits [len(rows), vocab])``: the last position's logits of each token
    sequence in ``seqs``, batch by batch. Sequences are sorted by length (longest first),
    left-padded with the pad id (0 without one) and explicit position ids; one forward pass per
    batch computes only the last position (``logits_to_keep=1``). ``rows`` index ``seqs``."""
    import torch
    from tqdm.auto import tqdm

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", mininterval=2.0):
        t_max = max(len(seqs[i]) for i in batch)
        ids = torch.full((len(batch), t_max), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), t_max), dtype=torch.long)
        for r, i in enumerate(batch):
            n = len(seqs[i])
            ids[r, t_max - n:] = torch.tensor(list(seqs[i]))
            mask[r, t_max - n:] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                           use_cache=False, logits_to_keep=1).logits[:, -1, :]
        yield batch, logits


def next_token_probs(model: Any, tokenizer: Any, prompts: Sequence[str], token_ids: Sequence[int],
                     batch_size: int = 8, max_length: int | None = None,
                     desc: str = "judge") -> tuple[np.ndarray, np.ndarray]:
    """The judge primitive: next-token probabilities after each prompt, over ``token_ids`` only.

    Returns ``(probs [n_prompts, n_tokens] float64, truncated [n_prompts] bool)``: the softmax of
    the last position's logits restricted to ``token_ids`` (rows sum to 1). Prompts are encoded
    as :func:`_encode_prompts` does; batches as :func:`last_position_logits`.
    """
    import torch

    ids_t = torch.tensor(list(token_ids), device=model.device)
    seqs, truncated = _encode_prompts(tokenizer, prompts, max_length)
    out = np.full((len(seqs), len(token_ids)), np.nan)
    for batch, logits in last_position_logits(model, tokenizer, seqs, batch_size, desc):
        out[batch] = torch.softmax(logits[:, ids_t].double(), dim=-1).cpu().numpy()
    return out, truncated


def rating_scores_loaded(model: Any, tokenizer: Any, prompts: Sequence[str], settings: JudgeSettings,
                         name: str = "judge") -> tuple[np.ndarray, np.ndarray]:
    """``(scores [n] float64, truncated [n] bool)`` of a rating judge with a loaded causal LM:
    ``Σ_k v_k · softmax_k`` over the rating tokens (values in [min v, max v]); see the module
    docstring. Raises :class:`JudgeError` when a rating is not a single token."""
    rating_ids = rating_token_ids(tokenizer, settings.ratings, name)
    probs, truncated = next_token_probs(model, tokenizer, prompts, rating_ids, settings.batch_size,
                                        settings.max_length)
    return probs @ np.asarray(settings.values, dtype=np.float64), truncated


def label_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """First token of ``" " + word`` for each label word (the word's own token if the space splits off)."""
    ids = []
    for w in words:
        toks = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        # tokenizers that split the leading space off: score the word's own first token
        while len(toks) > 1 and not tokenizer.decode(toks[:1]).strip():
            toks = toks[1:]
        if not toks:
            raise DataError(f"judge label word {w!r} encodes to no tokens")
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        raise DataError(f"judge label words {list(words)} share a first token; choose distinct words")
    return ids


def first_label_share(scores: Any, n: int) -> np.ndarray:
    """``s0 / (s0 + s1)`` per row of a two-label judge's scores (probabilities or any
    non-negative scores, shape ``[n, 2]``); raises on a wrong shape, NaN/negative scores
    (log-probabilities passed by mistake) or a row with zero mass on both labels."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.shape != (n, 2):
        raise RuntimeError(f"judge score_fn returned shape {arr.shape}; expected ({n}, 2)")
    if np.isnan(arr).any() or (arr < 0).any():
        raise RuntimeError("judge score_fn returned NaN or negative scores (log-probs?)")
    total = arr.sum(axis=1)
    if (total <= 0).any():
        bad = int(np.flatnonzero(total <= 0)[0])
        raise RuntimeError(f"judge gave zero mass to both label words for judge prompt {bad}")
    return arr[:, 0] / total


def label_word_probs(model: Any, tokenizer: Any, prompts: list[str], words: list[str],
                     batch_size: int = 8) -> np.ndarray:
    """Next-token probability of each label word's first token, renormalised over the words."""
    return next_token_probs(model, tokenizer, prompts, label_token_ids(tokenizer, words), batch_size,
                            desc="judge labels")[0]


# --------------------------------------------------------------------------- reward models


class SequenceClassifierReward:
    """A reward model with a sequence-classification head (Skywork-Reward, ArmoRM, …).

    Loaded in ``settings.dtype`` on :func:`teachfit.models.default_device` (or ``device``).
    :meth:`score_loaded` returns ``(scores [n] float64, truncated [n] bool)``; see the module
    docstring for formatting and pooling. Raises :class:`JudgeError` when ``model_dir`` has no
    ``config.json``.
    """

    def __init__(self, model_dir: str | Path, settings: JudgeSettings, device: str | None = None) -> None:
        self.settings = settings
        self.name = model_name(model_dir)
        if not (Path(model_dir) / "config.json").exists():
            raise JudgeError(f"{model_dir}: not a model directory (no config.json)")
        placement = device_placement(device)
        device = default_device(device)
        self.model = load_pretrained("AutoModelForSequenceClassification", model_dir,
                                     dtype=self.settings.dtype, **placement)
        self.model = (self.model if placement else self.model.to(device)).eval()
        self.tok = load_tokenizer(model_dir, padding_side="right")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.encoder = self.model.config.model_type in ENCODER_TYPES
        # tokenizer outputs the forward has no parameter for cannot reach it (documented drop)
        params = inspect.signature(self.model.forward).parameters
        self.forward_args = None if any(p.kind is p.VAR_KEYWORD for p in params.values()) else set(params)
        self.chat = bool(getattr(self.tok, "chat_template", None)) and not self.encoder

    def encode(self, instruction: str, response: str) -> tuple[list[int], bool]:
        """Token ids of one conversation and whether they were truncated (to max_length)."""
        inputs, truncated = self.encode_inputs(instruction, response)
        return inputs["input_ids"], truncated

    def encode_inputs(self, instruction: str, response: str) -> tuple[dict[str, list[int]], bool]:
        """The model inputs of one conversation (``input_ids`` and, for a text pair, every other
        per-token input the tokenizer makes, e.g. ``token_type_ids`` 0…0 1…1) and whether they
        were cut to ``max_length`` tokens. The cut always removes the END of the response:
        a chat conversation keeps its first ``max_length`` tokens; a text pair is cut
        ``only_second`` from the right, whatever the tokenizer's ``truncation_side``."""
        max_len = self.settings.max_length
        if self.chat:
            text = self.tok.apply_chat_template(
                [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}],
                tokenize=False,
            )
            ids = list(self.tok(text, add_special_tokens=False)["input_ids"])
            if adds_bos(self.tok) and (not ids or ids[0] != self.tok.bos_token_id):
                ids = [self.tok.bos_token_id, *ids]
            return {"input_ids": ids[:max_len]}, len(ids) > max_len
        full = self.tok(instruction, response)["input_ids"]
        with tokenizer_sides(self.tok, truncation="right", padding="right"):
            enc = self.tok(instruction, response, truncation="only_second" if len(full) > max_len else False,
                           max_length=max_len)
        inputs = {k: list(v) for k, v in enc.items() if k != "attention_mask"
                  and (self.forward_args is None or k in self.forward_args)}
        return inputs, len(full) > max_len

    def score_loaded(self, instructions: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        import torch
        from tqdm.auto import tqdm

        enc = [self.encode_inputs(q, a) for q, a in zip(instructions, responses, strict=True)]
        seqs = [e[0]["input_ids"] for e in enc]
        truncated = np.array([e[1] for e in enc], dtype=bool)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        bs = self.settings.batch_size
        out = np.full(len(seqs), np.nan)
        pad = self.tok.pad_token_id
        device = self.model.device
        cfg_pad = self.model.config.pad_token_id
        if not self.encoder:
            # Left padding + a pad id that never occurs: the pooled position is the last
            # one, i.e. every row's last real token (works for HF and ArmoRM-style pooling).
            self.model.config.pad_token_id = -1
        try:
            for start in tqdm(range(0, len(order), bs), desc="reward model", unit="batch", mininterval=2.0):
                batch = order[start: start + bs]
                t_max = max(len(seqs[i]) for i in batch)
                ids = torch.full((len(batch), t_max), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), t_max), dtype=torch.long)
                extra = {k: torch.zeros((len(batch), t_max), dtype=torch.long)
                         for k in enc[batch[0]][0] if k != "input_ids"}
                for r, i in enumerate(batch):
                    n = len(seqs[i])
                    sl = slice(0, n) if self.encoder else slice(t_max - n, t_max)
                    ids[r, sl] = torch.tensor(seqs[i])
                    mask[r, sl] = 1
                    for k, t in extra.items():
                        t[r, sl] = torch.tensor(enc[i][0][k])
                ids, mask = ids.to(device), mask.to(device)
                kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask,
                                          **{k: t.to(device) for k, t in extra.items()}}
                if not self.encoder:
                    kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
                with torch.inference_mode():
                    res = self.model(**kwargs)
                score = getattr(res, "score", None)
                score = (res.logits if score is None else score).reshape(len(batch), -1)
                if score.shape[1] != 1:
                    raise JudgeError(f"{self.name}: a reward model must output one score per sequence "
                                     f"(`.score` or a single logit); it outputs {score.shape[1]} logits and no `.score`")
                out[batch] = score[:, 0].double().cpu().numpy()
        finally:
            self.model.config.pad_token_id = cfg_pad
        return out, truncated

    def score(self, instructions: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self.score_loaded(instructions, responses)[0]


__all__ = [
    "PROMPTS",
    "JudgeError",
    "JudgeSettings",
    "SequenceClassifierReward",
    "difficulty_prompt",
    "first_label_share",
    "label_scorer",
    "label_token_ids",
    "label_word_probs",
    "next_token_probs",
    "rating_scores_loaded",
    "rating_token_ids",
    "reward_prompt",
]


def label_scorer(model_dir: str | Path, backend: dict[str, Any], batch_size: int,
                 threads: int | None = None) -> Any:
    """A two-label judge's ``score_fn(prompts, words) -> probs [n_prompts, n_words]``.

    One entry point for every judge of the workflow (win-rate pairs, ObjecQA objectivity):

    * a model behind an OpenAI-compatible endpoint (``backend["backend"] == "openai"``): the
      probability of each label word as the first answer token, from the endpoint's
      ``top_logprobs`` (:meth:`teachfit.generation.openai.OpenAIBackend.score_labels`);
    * any local model (transformers or vLLM entries alike): the softmax of the next-token logits
      over the words' first tokens, from one transformers forward pass per batch
      (:func:`label_word_probs`). Label scoring reads logits, it does not generate, so it runs the
      weights directly whatever engine generates with them.

    Prompts are plain text (no chat template is applied here).
    """
    cfg = BackendConfig.from_dict(backend)
    if cfg.backend == "openai":
        api = cfg.build(model_dir)
        return lambda prompts, words: api.score_labels(list(prompts), list(words))

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    tok = load_tokenizer(model_dir, padding_side="left")
    model = load_causal_lm(model_dir)
    return lambda prompts, words: label_word_probs(model, tok, list(prompts), list(words), batch_size)
