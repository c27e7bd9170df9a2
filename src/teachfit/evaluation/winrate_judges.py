"""Judges that read a conversation (system and user turns): the engines behind the AlpacaEval 2
and Arena-Hard protocols of :mod:`teachfit.evaluation.alpaca_eval2` and
:mod:`teachfit.evaluation.arena_hard`.

A :class:`ChatJudge` does two things:

* :meth:`ChatJudge.chat`: the judge's reply (text) to each conversation, greedy when
  ``temperature`` is 0 (Arena-Hard writes a judgment ending in a verdict label);
* :meth:`ChatJudge.top_logprobs`: the ``k`` most likely *first* tokens of the reply, as
  ``(token text, log-probability in nats)`` pairs, most likely first (AlpacaEval 2 reads the
  label tokens ``m`` / ``M`` from them).

:func:`chat_judge` builds one from a model folder and its engine settings
(:func:`teachfit.generation.engines.backend_settings`):

* ``openai`` entries (OpenAI itself, or a local model served by vLLM's OpenAI-compatible
  server: a model entry with ``source: api``, ``api_base: http://localhost:8000/v1``): one
  ``/chat/completions`` request per conversation through
  :meth:`teachfit.generation.openai.OpenAIBackend.chat_completions`. ``top_logprobs`` reads
  ``choices[0].logprobs.content[0].top_logprobs``, the shape AlpacaEval's ``logprob_parser``
  reads (alpaca_eval ``completion_parsers.py``); ``k`` is at most 20 (the OpenAI limit and vLLM's
  default ``--max-logprobs``).
* local model folders (``transformers`` or ``vllm`` entries): each conversation is formatted with
  the judge tokenizer's chat template plus the generation prompt. A template that rejects a
  system turn (Gemma's) gets the system text put in front of the first user turn, separated by a
  blank line. :meth:`chat` generates with the model's own engine
  (:meth:`teachfit.generation.engines.BackendConfig.build`); :meth:`top_logprobs` runs one
  transformers forward pass per batch and returns the top ``k`` of the log-softmax over the whole
  vocabulary at the next position (raw log-probabilities, no temperature, like vLLM's default
  ``logprobs_mode``), each token as the text ``tokenizer.decode([id])`` gives, as vLLM's server
  reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from teachfit.generation.base import SamplingConfig, encode_prompts
from teachfit.generation.engines import BackendConfig
from teachfit.generation.openai import APIError
from teachfit.models import load_causal_lm, load_tokenizer
from teachfit.schema import load_yaml
from teachfit.scoring.label_judge import last_position_logits

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]
MAX_TOP_LOGPROBS = 20
ROLES = ("system", "user", "assistant")


class ChatJudge(Protocol):
    """What the AlpacaEval 2 and Arena-Hard protocols need from a judge model."""

    name: str

    def chat(self, conversations: Sequence[Conversation], max_new_tokens: int,
             temperature: float) -> list[str]: ...

    def top_logprobs(self, conversations: Sequence[Conversation], k: int,
                     temperature: float) -> list[list[tuple[str, float]]]: ...


def check_conversations(conversations: Sequence[Conversation]) -> list[Conversation]:
    """Each conversation is a non-empty list of ``{"role", "content"}`` turns (roles system / user /
    assistant, strings) ending with a user turn; raises ``ValueError`` naming the first bad one."""
    out = []
    for i, conv in enumerate(conversations):
        if not isinstance(conv, list) or not conv:
            raise ValueError(f"conversation {i}: must be a non-empty list of turns, got {type(conv).__name__}")
        for j, turn in enumerate(conv):
            if (not isinstance(turn, dict) or turn.get("role") not in ROLES
                    or not isinstance(turn.get("content"), str) or set(turn) != {"role", "content"}):
                raise ValueError(f"conversation {i}, turn {j}: need {{'role': one of {ROLES}, 'content': str}}, "
                                 f"got {str(turn)[:200]}")
        if conv[-1]["role"] != "user":
            raise ValueError(f"conversation {i}: the last turn must be the user's, got {conv[-1]['role']!r}")
        out.append([dict(t) for t in conv])
    return out


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_LOGPROBS:
        raise ValueError(f"top_logprobs: k must be an integer in 1..{MAX_TOP_LOGPROBS}, got {k!r}")


# --------------------------------------------------------------------------- endpoint judges


class APIChatJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.name = api.api_model

    def chat(self, conversations: Sequence[Conversation], max_new_tokens: int,
             temperature: float) -> list[str]:
        """The text of ``choices[0]`` per conversation (empty string when the server sent none)."""
        convs = check_conversations(conversations)
        payloads = [{"messages": c, "temperature": float(temperature),
                     self.api.max_tokens_field: int(max_new_tokens)} for c in convs]
        answers = self.api.chat_completions(payloads, desc="judge")
        return [((a.choices[0].message.content if a.choices and a.choices[0].message else None) or "")
                for a in answers]

    def top_logprobs(self, conversations: Sequence[Conversation], k: int,
                     temperature: float) -> list[list[tuple[str, float]]]:
        """``logprobs=true, top_logprobs=k, max_tokens=1``; the alternatives of the first position.
        Raises :class:`teachfit.generation.openai.APIError` when an answer carries no logprobs."""
        _check_k(k)
        convs = check_conversations(conversations)
        payloads = [{"messages": c, "temperature": float(temperature), self.api.max_tokens_field: 1,
                     "logprobs": True, "top_logprobs": k} for c in convs]
        out = []
        for i, answer in enumerate(self.api.chat_completions(payloads, desc="judge logprobs")):
            try:
                first = answer.choices[0].logprobs.content[0]
            except (AttributeError, IndexError, TypeError):
                raise APIError(f"{self.api.url} returned no logprobs for judge conversation {i} "
                               f"(model {self.name!r}); the judge needs logprobs=true, top_logprobs={k}") from None
            alts = [(str(a.token), float(a.logprob)) for a in (first.top_logprobs or [])]
            out.append(sorted(alts, key=lambda t: -t[1]))
        return out


# --------------------------------------------------------------------------- local judges


def chat_text(tokenizer: Any, conversation: Conversation) -> str:
    """The conversation as prompt text: the tokenizer's chat template with the generation prompt.

    A template that fails on a leading system turn is given the conversation with the system text
    put in front of the first user turn (``system + "\\n\\n" + user``). Raises ``ValueError`` when
    the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("a chat judge needs a tokenizer with a chat template (models materialized by "
                         "teachfit.models get a default one)")
    try:
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    except Exception:  # a template without a system role raises its own TemplateError
        if conversation[0]["role"] != "system" or len(conversation) < 2 or conversation[1]["role"] != "user":
            raise
        merged = [{"role": "user", "content": conversation[0]["content"] + "\n\n" + conversation[1]["content"]},
                  *conversation[2:]]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)


def next_token_top_logprobs(model: Any, tokenizer: Any, prompts: Sequence[str], k: int,
                            batch_size: int) -> list[list[tuple[str, float]]]:
    """Top ``k`` next tokens after each formatted prompt: ``(tokenizer.decode([id]), log p)`` with
    log p the log-softmax over the full vocabulary (nats), most likely first.

    Prompts are encoded like the generation backends do
    (:func:`teachfit.generation.base.encode_prompts`); batches as
    :func:`teachfit.scoring.label_judge.last_position_logits`."""
    import torch

    _check_k(k)
    seqs = encode_prompts(tokenizer, list(prompts))
    out: list[list[tuple[str, float]]] = [[] for _ in seqs]
    for batch, logits in last_position_logits(model, tokenizer, seqs, batch_size, "judge logprobs"):
        logp = torch.log_softmax(logits.double(), dim=-1)
        top = torch.topk(logp, k, dim=-1)
        for r, i in enumerate(batch):
            out[i] = [(tokenizer.decode([int(t)]), float(v))
                      for t, v in zip(top.indices[r].tolist(), top.values[r].tolist())]
    return out


class LocalChatJudge:
    """A judge model from a local folder (see the module docstring)."""

    def __init__(self, model_dir: str | Path, backend: dict[str, Any], threads: int | None, seed: int) -> None:
        self.model_dir = Path(model_dir)
        self.cfg = BackendConfig.from_dict(backend)
        if self.cfg.backend == "openai":
            raise ValueError("LocalChatJudge: an openai entry is judged through APIChatJudge")
        self.threads, self.seed = threads, seed
        self.name = self.model_dir.name
        self.tokenizer = load_tokenizer(self.model_dir, padding_side="left")
        self._engine: Any = None
        self._lm: Any = None

    def chat(self, conversations: Sequence[Conversation], max_new_tokens: int,
             temperature: float) -> list[str]:
        convs = check_conversations(conversations)
        if not convs:
            return []
        if self._engine is None:
            self._engine = self.cfg.build(self.model_dir, threads=self.threads, seed=self.seed)
        prompts = [chat_text(self.tokenizer, c) for c in convs]
        outs = self._engine.generate(prompts, SamplingConfig(max_new_tokens=int(max_new_tokens),
                                                             temperature=float(temperature), seed=self.seed),
                                     desc="judge")
        return [o[0].text for o in outs]

    def top_logprobs(self, conversations: Sequence[Conversation], k: int,
                     temperature: float) -> list[list[tuple[str, float]]]:
        """``temperature`` is not applied: these are the raw log-probabilities (see the module
        docstring)."""
        _check_k(k)
        convs = check_conversations(conversations)
        if not convs:
            return []
        if self._lm is None:
            if self.threads:
                import torch

                torch.set_num_threads(int(self.threads))
            self._lm = load_causal_lm(self.model_dir, dtype=self.cfg.dtype or "float32", device=self.cfg.device)
        prompts = [chat_text(self.tokenizer, c) for c in convs]
        return next_token_top_logprobs(self._lm, self.tokenizer, prompts, k, self.cfg.batch_size)


def chat_judge(model_dir: str | Path, backend: dict[str, Any], threads: int | None = None,
               seed: int = 0) -> ChatJudge:
    """The :class:`ChatJudge` of a judge model: its folder (``results/models/<alias>``; an API
    model's folder holds only its manifest) and its engine settings ``backend``."""
    cfg = BackendConfig.from_dict(backend)
    if cfg.backend == "openai":
        return APIChatJudge(cfg.build(model_dir))
    return LocalChatJudge(model_dir, backend, threads, seed)


# --------------------------------------------------------------------------- prompt templates

PLACEHOLDERS = ("instruction", "output_1", "output_2")


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{instruction}`` / ``{output_1}`` / ``{output_2}`` replaced by its
    value in one pass (inserted text is never rescanned; other braces, such as the JSON-like
    layout of AlpacaEval's prompt, stay as they are)."""
    import re

    missing = [p for p in PLACEHOLDERS if p not in values]
    if missing:
        raise ValueError(f"render: no value for placeholder(s) {missing}")
    return re.sub(r"\{(instruction|output_1|output_2)\}", lambda m: values[m.group(1)], template)


def load_judge_prompt(path: str | Path) -> tuple[str, str]:
    """``(system, user)`` templates from a YAML file with exactly the keys ``system`` and ``user``
    (strings); ``user`` must contain ``{instruction}``, ``{output_1}`` and ``{output_2}``. This is
    how a run uses a benchmark's official judge prompt, which the project does not ship. Raises
    ``ValueError`` naming the file and the problem."""
    data = load_yaml(path)
    if not isinstance(data, dict) or set(data) != {"system", "user"}:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: a judge prompt file needs exactly the keys 'system' and 'user', got {got}")
    for key in ("system", "user"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise ValueError(f"{path}: '{key}' must be a non-empty string")
    missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in data["user"]]
    if missing:
        raise ValueError(f"{path}: the 'user' template lacks the placeholder(s) "
                         f"{', '.join('{' + p + '}' for p in missing)}")
    return data["system"], data["user"]
