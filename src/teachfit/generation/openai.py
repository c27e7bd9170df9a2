"""Generation through an OpenAI-compatible ``/chat/completions`` endpoint, with the official
``openai`` SDK (``OpenAI(...).chat.completions.create``).

:class:`OpenAIBackend` implements the :class:`teachfit.generation.base.Backend` protocol
for hosted models (OpenAI, or any server that speaks the same API: vLLM's
``vllm serve``, TGI, llama.cpp's server, ...). Retries, backoff and timeouts are the SDK's:
a request that fails with HTTP 408, 409, 429 or 5xx, a timeout or a dropped connection is
retried ``max_retries`` times with exponential backoff (honouring ``Retry-After`` /
``retry-after-ms`` up to two minutes); any other HTTP error fails at once.

Semantics, compared with the local backends:

* Each prompt is the *raw instruction text*; it is sent as one user message
  (``messages=[{"role": "user", "content": prompt}]``) and the server applies its
  own chat template.
* ``SamplingConfig`` maps to ``temperature``, ``top_p``, ``n``, ``max_tokens``
  (``max_new_tokens``; the field name is configurable because newer OpenAI models
  want ``max_completion_tokens``), ``stop`` (omitted when empty) and ``seed``. The
  seed sent for a prompt is :func:`prompt_seed` (run seed + prompt text), so each
  prompt has its own stream, as with the local backends. Hosted APIs treat the
  seed as best effort: sampled outputs need not be reproducible.
* ``sampling.logprobs`` sends ``logprobs=true, top_logprobs=1``;
  ``top1_logprobs[i]`` (nats) is the largest log-probability the server reports at
  position ``i`` (its top-1 alternative or the sampled token). Whether that is the
  raw or the temperature-scaled distribution is the server's choice.
* The API returns text, not token ids. ``Completion.token_ids`` therefore holds
  ``API_TOKEN_ID`` (-1) placeholders, one per generated token, so that
  ``len(token_ids)`` is the completion length: counted from the logprobs when they
  were requested (a final entry for the EOS token, which vLLM's server reports, is dropped
  with its logprob, as the local backends never return the EOS), otherwise from
  ``usage.completion_tokens`` when ``n == 1`` (as the server counts: vLLM includes the EOS
  token, one more than the local backends); with ``n > 1`` and no logprobs the per-choice
  count is unknown and the list is empty.
* The server tokenizes, so the backend cannot cut an over-long prompt to fit:
  ``Completion.prompt_tokens_cut`` is ``None`` (unknown) and such a prompt fails with the
  server's HTTP 400 (:class:`APIError`).
* ``finish_reason`` ``"stop"`` (or TGI's ``"eos_token"``) and ``"length"`` map to
  the same values; any other reason (``content_filter``, ``tool_calls``) is an
  error naming the prompt. Stop strings are also applied to the returned text, in
  case a server ignores them.

The API key is read from the environment variable ``api_key_env`` each time
:meth:`OpenAIBackend.generate` or :meth:`OpenAIBackend.score_labels` is called and handed to
a client that lives for that call only; it is never stored on the backend, never logged, and
removed from every error message (:class:`APIError`).
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np

from teachfit.generation.base import Completion, SamplingConfig, truncate_at_stop
from teachfit.io import content_id

log = logging.getLogger(__name__)

API_TOKEN_ID = -1  # placeholder token id: the API returns text, not ids
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_FINISH = {"stop": "stop", "eos_token": "stop", "eos": "stop", "length": "length"}
_NO_KEY = "teachfit-no-key"  # the SDK wants some key; the Authorization header is then omitted


def _ends_with_eos_entry(content: list[Any], text: str) -> bool:
    """Whether the last logprobs entry is the end-of-sequence token rather than text: the
    entries before it spell ``text`` exactly and it adds nothing to it (vLLM reports the EOS it
    stopped on, e.g. ``<|im_end|>``, with its logprob; local backends never return it)."""
    tokens = [str(getattr(pos, "token", "") or "") for pos in content]
    return bool(tokens) and "".join(tokens[:-1]) == text


class APIError(RuntimeError):
    """A request to the API failed; ``status`` is the last HTTP status (None: no response)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def prompt_seed(seed: int, prompt: str) -> int:
    """Seed sent with one prompt's request: derived from the run seed and the prompt (< 2**31)."""
    return int(content_id(seed, prompt, n=8), 16) & 0x7FFFFFFF


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


class OpenAIBackend:
    """Generation through an OpenAI-compatible chat completions endpoint.

    ``api_base`` is the URL up to and including the version prefix
    (``https://api.openai.com/v1``, ``http://127.0.0.1:8000/v1``); requests go to
    ``{api_base}/chat/completions``. ``api_key_env`` names the environment variable
    that holds the key; ``None`` sends no ``Authorization`` header (a local server
    without auth). ``max_retries`` and ``timeout_s`` go to the SDK client (model entry
    keys ``api_max_retries`` / ``api_timeout_s``). Up to ``max_concurrency`` requests run at
    once (one per prompt, each asking for ``n`` choices). Raises ``ValueError`` naming the
    argument on a bad value (without echoing a key pasted as ``api_key_env``).
    """

    name = "openai"

    def __init__(
        self,
        api_base: str,
        api_model: str,
        api_key_env: str | None,
        max_retries: int,
        timeout_s: float,
        max_concurrency: int = 4,
        max_tokens_field: str = "max_tokens",
    ) -> None:
        if not isinstance(api_base, str) or not re.match(r"^https?://[^/\s]+", api_base):
            raise ValueError(
                f"api_base must be an http(s) URL such as https://api.openai.com/v1, got {api_base!r}")
        if not isinstance(api_model, str) or not api_model.strip():
            raise ValueError("api_model must be a non-empty model name")
        if api_key_env is not None and (not isinstance(api_key_env, str) or not _ENV_NAME.match(api_key_env)):
            # the value is not echoed: a common mistake is to paste the key itself here
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (letters, digits, _; "
                "at most 64 characters) that holds the key, not the key itself"
            )
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if max_tokens_field not in MAX_TOKENS_FIELDS:
            raise ValueError(f"max_tokens_field {max_tokens_field!r} is not known; "
                             f"allowed: {', '.join(MAX_TOKENS_FIELDS)}")
        self.api_base = api_base.rstrip("/")
        self.api_model = api_model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.max_tokens_field = max_tokens_field
        self.url = f"{self.api_base}/chat/completions"
        self.tokenizer = None
        # identity for shard keys / provenance; never the key or its variable
        self.info = {"backend": self.name, "api_base": self.api_base, "api_model": self.api_model}

    def __repr__(self) -> str:
        return (f"OpenAIBackend(api_base={self.api_base!r}, api_model={self.api_model!r}, "
                f"api_key_env={self.api_key_env!r})")

    # ------------------------------------------------------------------ HTTP

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise RuntimeError(
                f"environment variable {self.api_key_env} is not set or empty; it must hold the API key "
                f"for {self.api_base} (or set api_key_env: null for a server without authentication)"
            )
        return key

    def _client(self, key: str | None) -> Any:
        """An SDK client for one call of :meth:`generate` / :meth:`score_labels` (closed after it)."""
        from openai import OpenAI

        return OpenAI(base_url=self.api_base, api_key=key or _NO_KEY, max_retries=self.max_retries,
                      timeout=self.timeout_s)

    def _create(self, client: Any, payload: dict[str, Any], key: str | None, what: str) -> Any:
        """``client.chat.completions.create(**payload)``; SDK errors become :class:`APIError`
        (status, model and the server's message, the key removed)."""
        import openai

        extra: dict[str, Any] = {}
        if key is None:  # a server without authentication: send no Authorization header
            extra["extra_headers"] = {"Authorization": openai.Omit()}
        try:
            return client.chat.completions.create(**payload, **extra)
        except openai.APIStatusError as exc:
            status = exc.status_code
            retryable = status in (408, 409, 429) or status >= 500
            tries = f" after {self.max_retries + 1} attempt(s)" if retryable else ""
            raise APIError(_redact(f"{self.url} answered HTTP {status}{tries} for model {self.api_model!r} "
                                   f"({what}): {exc.message}", key), status) from None
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            raise APIError(_redact(f"{self.url} failed for model {self.api_model!r} ({what}) after "
                                   f"{self.max_retries + 1} attempt(s); last error: {type(exc).__name__}: "
                                   f"{exc}", key)) from None

    def _map(self, fn: Any, items: list[Any], desc: str) -> list[Any]:
        """``fn(i, item)`` for every item, ``max_concurrency`` at a time, results in input order."""
        from tqdm.auto import tqdm

        results: list[Any] = [None] * len(items)
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            futures = {pool.submit(fn, i, item): i for i, item in enumerate(items)}
            try:
                for fut in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="prompt"):
                    results[futures[fut]] = fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        return results

    # ------------------------------------------------------------------ generation

    def request_payload(self, prompt: str, sampling: SamplingConfig) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` (= the JSON body) for one prompt."""
        payload: dict[str, Any] = {
            "model": self.api_model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "n": sampling.n,
            self.max_tokens_field: sampling.max_new_tokens,
            "seed": prompt_seed(sampling.seed, prompt),
        }
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        if sampling.logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = 1
        return payload

    def _completions(self, i: int, answer: Any, sampling: SamplingConfig) -> list[Completion]:
        where = f"prompt {i}, model {self.api_model!r}"
        choices = getattr(answer, "choices", None)
        if not isinstance(choices, list):
            raise APIError(f"{self.url}: answer without 'choices' for {where}: {str(answer)[:300]}")
        if len(choices) != sampling.n:
            raise APIError(f"{self.url} returned {len(choices)} choice(s) for {where}; "
                           f"expected n={sampling.n} (does the server support n > 1?)")
        choices = sorted(choices, key=lambda c: c.index or 0)
        usage = getattr(answer, "usage", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        out = []
        for c in choices:
            reason = c.finish_reason
            if reason not in _FINISH:
                raise APIError(f"{self.url} finished {where} with reason {reason!r}; "
                               f"only {sorted(_FINISH)} are accepted")
            raw = (c.message.content if c.message is not None else None) or ""
            text, cut = truncate_at_stop(raw, sampling.stop)
            finish = "stop" if cut else _FINISH[reason]
            top1: list[float] | None = None
            if sampling.logprobs:
                content = getattr(c.logprobs, "content", None)
                if not isinstance(content, list):
                    raise APIError(f"{self.url} returned no logprobs for {where} "
                                   "although logprobs were requested")
                if finish == "stop" and not cut and _ends_with_eos_entry(content, raw):
                    content = content[:-1]  # the EOS the server stopped on (vLLM reports it)
                top1 = [max([float(pos.logprob)] + [float(t.logprob) for t in pos.top_logprobs or []])
                        for pos in content]
                n_tokens: int | None = len(content)
            elif sampling.n == 1 and isinstance(completion_tokens, int):
                n_tokens = completion_tokens
            else:
                n_tokens = None
            out.append(Completion(text=text, token_ids=[API_TOKEN_ID] * (n_tokens or 0),
                                  finish_reason=finish, top1_logprobs=top1, prompt_tokens_cut=None))
        return out

    def generate(
        self, prompts: list[str], sampling: SamplingConfig, desc: str = "generate"
    ) -> list[list[Completion]]:
        """One list of ``sampling.n`` completions per prompt, in input order.

        Raises :class:`APIError` (HTTP status, model, the server's message) when a request
        fails for good, and ``RuntimeError`` when the key's environment variable is unset."""
        if not prompts:
            return []
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompts[{i}] must be a str, got {type(p).__name__}")
        key = self._api_key()
        log.info("%s: %d prompts to %s (model %s, %d at a time)", desc, len(prompts), self.url,
                 self.api_model, self.max_concurrency)
        with self._client(key) as client:
            def one(i: int, prompt: str) -> list[Completion]:
                answer = self._create(client, self.request_payload(prompt, sampling), key, f"prompt {i}")
                return self._completions(i, answer, sampling)

            return self._map(one, list(prompts), desc)

    # ------------------------------------------------------------------ judging

    def chat_completions(self, payloads: list[dict[str, Any]], desc: str = "chat") -> list[Any]:
        """The SDK's answer to each request, in input order: ``payloads[i]`` holds the keyword
        arguments of ``chat.completions.create`` except ``model`` (``messages`` with system /
        user / assistant turns, ``temperature``, the :attr:`max_tokens_field`, ``logprobs``,
        ``top_logprobs`` ...); ``model`` is this backend's ``api_model``.

        For callers that need more than one user turn or read fields :meth:`generate` does not
        return: the judges of :mod:`teachfit.evaluation.winrate_judges` (AlpacaEval 2's system prompt
        and first-token ``top_logprobs``, Arena-Hard's system prompt and its "continue your
        judgment" turn). Errors as :meth:`generate` (:class:`APIError`, key never shown)."""
        for i, p in enumerate(payloads):
            if not isinstance(p, dict) or not isinstance(p.get("messages"), list) or "model" in p:
                raise ValueError(f"payloads[{i}] must be a dict with a 'messages' list and no 'model' "
                                 f"(the backend sets it), got {str(p)[:200]}")
        if not payloads:
            return []
        key = self._api_key()
        with self._client(key) as client:
            def one(i: int, payload: dict[str, Any]) -> Any:
                return self._create(client, {"model": self.api_model, **payload}, key, f"{desc} request {i}")

            return self._map(one, list(payloads), desc)

    def score_labels(self, prompts: list[str], label_words: list[str], top_logprobs: int = 20) -> np.ndarray:
        """Probability of each label word as the first answer token: array ``(n, len(label_words))``.

        The endpoint branch of :func:`teachfit.scoring.label_judge.label_scorer` (win-rate pairs,
        ObjecQA objectivity). Each prompt is sent with ``temperature=0, max_tokens=1,
        logprobs=true, top_logprobs=top_logprobs``; the score of a word is the summed
        probability (``exp`` of the reported log-probabilities) of the top alternatives at the
        first position whose text equals the word after stripping whitespace (``"A"`` and
        ``" A"`` both count). A word outside the returned top list scores 0.
        """
        label_words = [str(w).strip() for w in label_words]
        if len(set(label_words)) != len(label_words) or not all(label_words):
            raise ValueError(f"label words must be distinct and non-empty, got {label_words}")
        if not 1 <= top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in 1..20 (the OpenAI limit), got {top_logprobs}")
        if not prompts:
            return np.zeros((0, len(label_words)))
        key = self._api_key()

        with self._client(key) as client:
            def one(i: int, prompt: str) -> list[float]:
                payload = {
                    "model": self.api_model,
                    "messages": [{"role": "user", "content": prompt}],
                    "temperature": 0.0,
                    self.max_tokens_field: 1,
                    "logprobs": True,
                    "top_logprobs": top_logprobs,
                }
                answer = self._create(client, payload, key, f"judge prompt {i}")
                try:
                    first = answer.choices[0].logprobs.content[0]
                except (AttributeError, IndexError, TypeError):
                    raise APIError(f"{self.url} returned no logprobs for judge prompt {i} "
                                   f"(model {self.api_model!r})") from None
                alts = list(first.top_logprobs or []) or [first]
                row = [0.0] * len(label_words)
                for alt in alts:
                    tok = str(alt.token or "").strip()
                    if tok in label_words:
                        row[label_words.index(tok)] += float(np.exp(float(alt.logprob)))
                return row

            return np.asarray(self._map(one, list(prompts), "judge"), dtype=np.float64)
