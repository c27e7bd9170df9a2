"""OpenAIBackend (the official ``openai`` SDK) against a fake OpenAI-compatible server on
127.0.0.1 (no network).

Dropped with the hand-written urllib client (the SDK owns these now): the exact backoff
schedule (``backoff_s``, doubling, 60 s cap, jitter) and the ``User-Agent`` / ``Accept``
headers it sent. Retries on 429/5xx, timeouts and refused connections are still tested,
through the SDK."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from teachfit.schema import defaults
from teachfit.generation.base import SamplingConfig
from teachfit.generation.driver import generate_to_parquet
from teachfit.generation.engines import BackendConfig, backend_settings
from teachfit.generation.openai import API_TOKEN_ID, APIError, OpenAIBackend, prompt_seed
from teachfit.io import read_parquet

KEY = "sk-test-SECRET-0123456789"
ENV = "TEACHFIT_TEST_API_KEY"
FAST_RETRY = {"retry-after-ms": "1"}  # the SDK honours it: retries without its 0.5 s backoff
GREEDY = SamplingConfig(max_new_tokens=16)

Responder = Callable[[dict[str, Any], int], tuple[int, dict[str, Any], dict[str, str]]]


def echo_choices(payload: dict[str, Any]) -> dict[str, Any]:
    """Default answer: choice j of prompt p says "<p> #j"; with logprobs, one entry per word."""
    prompt = payload["messages"][0]["content"]
    choices = []
    for j in reversed(range(payload.get("n", 1))):  # reversed: the client must sort by index
        text = f"{prompt} #{j}"
        choice: dict[str, Any] = {"index": j, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
        if payload.get("logprobs"):
            words = text.split()
            choice["logprobs"] = {"content": [
                {"token": w, "logprob": -0.5 * (k + 1),
                 "top_logprobs": [{"token": w, "logprob": -0.1 * (k + 1)}]}
                for k, w in enumerate(words)
            ]}
        choices.append(choice)
    return {"id": "x", "object": "chat.completion", "model": payload["model"], "choices": choices,
            "usage": {"completion_tokens": 7 * payload.get("n", 1)}}


class FakeServer:
    """Records every request; ``responder(payload, call_no)`` decides each answer."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.responder: Responder = lambda payload, k: (200, echo_choices(payload), {})
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length))
                with fake.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fake.requests.append({"path": self.path, "headers": headers, "json": payload})
                    call_no = len(fake.requests)
                status, body, headers = fake.responder(payload, call_no)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(ENV, KEY)
    srv = FakeServer()
    yield srv
    srv.close()


def backend(srv: FakeServer, **kw: Any) -> OpenAIBackend:
    kw = {"api_key_env": ENV, "max_concurrency": 3, "timeout_s": 5, "max_retries": 3, **kw}
    return OpenAIBackend(srv.base, "fake-model", **kw)


def test_payload_mapping(server: FakeServer) -> None:
    s = SamplingConfig(temperature=0.7, top_p=0.9, n=2, max_new_tokens=17, seed=3, stop=["\n\n"])
    out = backend(server).generate(["hello there"], s)
    assert len(out) == 1 and len(out[0]) == 2
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["json"] == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hello there"}],
        "temperature": 0.7, "top_p": 0.9, "n": 2, "max_tokens": 17,
        "seed": prompt_seed(3, "hello there"), "stop": ["\n\n"],
    }


def test_payload_greedy_logprobs_and_max_tokens_field(server: FakeServer) -> None:
    s = SamplingConfig(max_new_tokens=5, logprobs=True)
    backend(server, max_tokens_field="max_completion_tokens").generate(["a"], s)
    body = server.requests[0]["json"]
    assert body["temperature"] == 0.0 and body["n"] == 1
    assert body["max_completion_tokens"] == 5 and "max_tokens" not in body
    assert body["logprobs"] is True and body["top_logprobs"] == 1
    assert "stop" not in body


def test_prompt_seed_per_prompt() -> None:
    assert prompt_seed(0, "a") == prompt_seed(0, "a")
    assert prompt_seed(0, "a") != prompt_seed(0, "b")
    assert prompt_seed(0, "a") != prompt_seed(1, "a")
    assert 0 <= prompt_seed(123, "x" * 1000) < 2 ** 31


def test_n_samples_in_input_order(server: FakeServer) -> None:
    prompts = [f"prompt {i}" for i in range(7)]
    out = backend(server).generate(prompts, SamplingConfig(temperature=1.0, n=3, max_new_tokens=16))
    assert len(server.requests) == 7
    assert [[c.text for c in row] for row in out] == [[f"{p} #{j}" for j in range(3)] for p in prompts]
    # n > 1 without logprobs: the per-choice token count is unknown
    assert all(c.token_ids == [] and c.finish_reason == "stop" and c.top1_logprobs is None
               for row in out for c in row)


def test_token_count_from_usage_when_n_is_1(server: FakeServer) -> None:
    (row,) = backend(server).generate(["x"], GREEDY)
    assert row[0].token_ids == [API_TOKEN_ID] * 7


def test_stop_and_length(server: FakeServer) -> None:
    def responder(payload: dict[str, Any], k: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        prompt = payload["messages"][0]["content"]
        if prompt == "ignores-stop":  # a server that does not apply stop strings
            choice = {"index": 0, "message": {"content": "abc\n\nrest"}, "finish_reason": "length"}
        else:
            choice = {"index": 0, "message": {"content": "cut off"}, "finish_reason": "length"}
        return 200, {"choices": [choice]}, {}

    server.responder = responder
    out = backend(server).generate(["ignores-stop", "long"], SamplingConfig(stop=["\n\n"], max_new_tokens=16))
    assert (out[0][0].text, out[0][0].finish_reason) == ("abc", "stop")
    assert (out[1][0].text, out[1][0].finish_reason) == ("cut off", "length")


def test_unknown_finish_reason_is_an_error(server: FakeServer) -> None:
    server.responder = lambda p, k: (200, {"choices": [{"index": 0, "message": {"content": ""},
                                                        "finish_reason": "content_filter"}]}, {})
    with pytest.raises(APIError, match="content_filter"):
        backend(server).generate(["x"], GREEDY)


def test_wrong_number_of_choices(server: FakeServer) -> None:
    server.responder = lambda p, k: (200, echo_choices({**p, "n": 1}), {})
    with pytest.raises(APIError, match="1 choice.*n=2"):
        backend(server).generate(["x"], SamplingConfig(temperature=1.0, n=2, max_new_tokens=16))


def test_logprobs_parsing(server: FakeServer) -> None:
    s = SamplingConfig(logprobs=True, temperature=1.0, n=2, max_new_tokens=16)
    out = backend(server).generate(["one two"], s)
    for j, c in enumerate(out[0]):
        assert c.text == f"one two #{j}"
        # the top-1 alternative (-0.1 k) beats the sampled token's logprob (-0.5 k)
        assert c.top1_logprobs == pytest.approx([-0.1, -0.2, -0.3])
        assert c.token_ids == [API_TOKEN_ID] * 3


def test_eos_logprob_entry_is_dropped(server: FakeServer) -> None:
    """vLLM's server reports the EOS it stopped on as a last logprobs entry (found against a real
    vllm serve, tests/test_vllm_serve.py); the local backends never return the EOS, so it is
    dropped with its logprob. A length stop or entries that do not spell the text keep all."""
    def answer(finish: str, tokens: list[str]) -> dict[str, Any]:
        content = [{"token": t, "logprob": -0.5, "top_logprobs": [{"token": t, "logprob": -0.25}]}
                   for t in tokens]
        return {"id": "x", "object": "chat.completion", "model": "m", "usage": {"completion_tokens": 4},
                "choices": [{"index": 0, "finish_reason": finish, "logprobs": {"content": content},
                             "message": {"role": "assistant", "content": "Paris."}}]}

    s = SamplingConfig(logprobs=True, max_new_tokens=16)
    cases = [("stop", ["Par", "is", ".", "<|im_end|>"], 3), ("stop", ["Par", "is", ".", ""], 3),
             ("length", ["Par", "is", ".", "<|im_end|>"], 4), ("stop", ["Par", "is", "."], 3)]
    for finish, tokens, n in cases:
        server.responder = lambda p, k, f=finish, t=tokens: (200, answer(f, t), {})
        c = backend(server).generate(["q"], s)[0][0]
        assert len(c.token_ids) == len(c.top1_logprobs) == n, (finish, tokens)


def test_missing_logprobs_is_an_error(server: FakeServer) -> None:
    server.responder = lambda p, k: (200, echo_choices({**p, "logprobs": False}), {})
    with pytest.raises(APIError, match="no logprobs"):
        backend(server).generate(["x"], SamplingConfig(logprobs=True, max_new_tokens=16))


def test_retry_429_then_200(server: FakeServer) -> None:
    def responder(payload: dict[str, Any], k: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        if k == 1:
            return 429, {"error": {"message": "slow down"}}, FAST_RETRY
        if k == 2:
            return 503, {"error": {"message": "overloaded"}}, FAST_RETRY
        return 200, echo_choices(payload), {}

    server.responder = responder
    out = backend(server).generate(["p"], GREEDY)
    assert out[0][0].text == "p #0"
    assert len(server.requests) == 3


def test_retries_exhausted(server: FakeServer) -> None:
    server.responder = lambda p, k: (500, {"error": {"message": "boom"}}, FAST_RETRY)
    with pytest.raises(APIError, match=r"HTTP 500 after 3 attempt\(s\).*fake-model.*boom") as err:
        backend(server, max_retries=2).generate(["p"], GREEDY)
    assert len(server.requests) == 3
    assert err.value.status == 500  # the last status (the urllib client said None here)


def test_non_retryable_4xx_names_status_and_model_and_hides_key(server: FakeServer) -> None:
    # a server that echoes the key back in its error message
    server.responder = lambda p, k: (401, {"error": {"message": f"Incorrect API key provided: {KEY}"}},
                                     FAST_RETRY)
    with pytest.raises(APIError) as err:
        backend(server).generate(["p"], GREEDY)
    msg = str(err.value)
    assert "HTTP 401" in msg and "fake-model" in msg and err.value.status == 401
    assert KEY not in msg and "***" in msg
    assert len(server.requests) == 1  # not retried


def test_connection_refused_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)
    srv = FakeServer()
    base = srv.base
    srv.close()  # nothing listens on this port any more
    b = OpenAIBackend(base, "fake-model", api_key_env=ENV, timeout_s=2, max_retries=1)
    with pytest.raises(APIError, match="after 2 attempt.*APIConnectionError") as err:
        b.generate(["p"], GREEDY)
    assert err.value.status is None


def test_missing_key(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(RuntimeError, match=f"environment variable {ENV} is not set"):
        backend(server).generate(["p"], GREEDY)
    assert server.requests == []
    monkeypatch.setenv(ENV, "  ")
    with pytest.raises(RuntimeError, match=ENV):
        backend(server).generate(["p"], GREEDY)


def test_no_auth_when_key_env_is_none(server: FakeServer) -> None:
    backend(server, api_key_env=None).generate(["p"], GREEDY)
    assert "authorization" not in server.requests[0]["headers"]


def test_key_never_in_info_or_repr(server: FakeServer) -> None:
    b = backend(server)
    b.generate(["p"], GREEDY)  # the key has been used
    assert b.info == {"backend": "openai", "api_base": server.base, "api_model": "fake-model"}
    for text in (repr(b), str(b), json.dumps(b.info), repr(vars(b))):
        assert KEY not in text
    assert b.tokenizer is None


def test_key_pasted_as_env_name_is_rejected_without_echo() -> None:
    with pytest.raises(ValueError) as err:
        OpenAIBackend("https://api.example.com/v1", "m", api_key_env=KEY, max_retries=0, timeout_s=1)
    assert KEY not in str(err.value)


def test_constructor_validation() -> None:
    ok = {"api_key_env": ENV, "max_retries": 0, "timeout_s": 1}
    with pytest.raises(ValueError, match="api_base"):
        OpenAIBackend("api.openai.com/v1", "m", **ok)
    with pytest.raises(ValueError, match="api_model"):
        OpenAIBackend("https://x/v1", " ", **ok)
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIBackend("https://x/v1", "m", max_concurrency=0, **ok)
    with pytest.raises(ValueError, match="max_tokens_field"):
        OpenAIBackend("https://x/v1", "m", max_tokens_field="tokens", **ok)
    with pytest.raises(ValueError, match="max_retries"):
        OpenAIBackend("https://x/v1", "m", **{**ok, "max_retries": -1})
    with pytest.raises(ValueError, match="timeout_s"):
        OpenAIBackend("https://x/v1", "m", **{**ok, "timeout_s": 0})


def api_entry(srv: FakeServer, **kw: Any) -> dict[str, Any]:
    """An ``api`` model entry (schema defaults filled) pointing at the fake server."""
    return defaults("models.*", source="api", backend="openai", api_base=srv.base + "/",
                    api_model="fake-model", api_key_env=ENV, **kw)


def test_backend_config_builds_the_sdk_backend(server: FakeServer) -> None:
    """The model entry configures the endpoint, the SDK's retries and timeout (schema defaults 3 / 60 s)."""
    b = BackendConfig.from_dict(backend_settings(api_entry(server), defaults("generation"))).build("unused")
    assert isinstance(b, OpenAIBackend)
    assert b.url == server.base + "/chat/completions" and (b.max_retries, b.timeout_s) == (3, 60.0)
    b = BackendConfig.from_dict(backend_settings(api_entry(server, api_max_retries=0, api_timeout_s=2.5),
                                                 defaults("generation"))).build("unused")
    assert (b.max_retries, b.timeout_s) == (0, 2.5)
    server.responder = lambda p, k: (503, {"error": {"message": "down"}}, FAST_RETRY)
    with pytest.raises(APIError, match="after 1 attempt"):
        b.generate(["p"], GREEDY)
    assert len(server.requests) == 1  # api_max_retries: 0 reaches the SDK
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['api_key'\]"):
        BackendConfig.from_dict({**backend_settings(api_entry(server), defaults("generation")),
                                 "api_key": KEY})


def test_generate_responses_through_an_endpoint(server: FakeServer, tmp_path) -> None:
    """Rule generate_responses with an ``api`` model: raw instructions go to the endpoint (no local
    tokenizer or chat template), one request per instruction with its own seed."""
    import polars as pl

    from teachfit.generation.responses import generate_responses
    from teachfit.models import materialize

    entry = api_entry(server)
    model_dir = tmp_path / "gpt"
    materialize("gpt", entry, model_dir)  # only the manifest
    pl.DataFrame({"id": ["a", "b"], "instruction": ["say hi", "say bye"]}
                 ).write_parquet(tmp_path / "i.parquet")
    gen = defaults("generators.*", model="gpt", temperature=0.7, n=2, max_new_tokens=9, seed=5)
    df = generate_responses(tmp_path / "i.parquet", model_dir, tmp_path / "g.parquet", tmp_path / "shards",
                            "g_api", gen, backend_settings(entry, defaults("generation")),
                            defaults("generation"), threads=1)
    assert df["prompt"].to_list() == ["say hi", "say hi", "say bye", "say bye"]
    assert df["response"].to_list() == ["say hi #0", "say hi #1", "say bye #0", "say bye #1"]
    assert df["backend"].unique().to_list() == ["openai"] and df["model"].unique().to_list() == ["gpt"]
    bodies = sorted((r["json"] for r in server.requests), key=lambda b: b["messages"][0]["content"])
    assert [b["seed"] for b in bodies] == [prompt_seed(5, "say bye"), prompt_seed(5, "say hi")]
    assert all(b["n"] == 2 and b["max_tokens"] == 9 and b["temperature"] == 0.7 for b in bodies)


def test_through_generate_to_parquet(server: FakeServer, tmp_path) -> None:
    records = [{"id": f"r{i}", "instruction": f"do {i}"} for i in range(5)]
    s = SamplingConfig(temperature=0.5, n=2, logprobs=True, max_new_tokens=16)
    df = generate_to_parquet(backend(server), records, [r["instruction"] for r in records], s,
                             tmp_path / "out.parquet", tmp_path / "shards", shard_size=2)
    assert df.height == 10
    assert df["response"].to_list()[:2] == ["do 0 #0", "do 0 #1"]
    assert df["n_response_tokens"].to_list() == [3] * 10
    assert read_parquet(tmp_path / "out.parquet").height == 10
    # rerun reuses the shards: no new requests
    n_before = len(server.requests)
    generate_to_parquet(backend(server), records, [r["instruction"] for r in records], s,
                        tmp_path / "out.parquet", tmp_path / "shards", shard_size=2)
    assert len(server.requests) == n_before


def test_score_labels(server: FakeServer) -> None:
    def responder(payload: dict[str, Any], k: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        assert payload["max_tokens"] == 1 and payload["top_logprobs"] == 5 and payload["temperature"] == 0.0
        top = [{"token": "A", "logprob": float(np.log(0.6))}, {"token": " B", "logprob": float(np.log(0.3))},
               {"token": " A", "logprob": float(np.log(0.05))}, {"token": "C", "logprob": float(np.log(0.05))}]
        if payload["messages"][0]["content"] == "no-b":
            top = top[:1]
        choice = {"index": 0, "message": {"content": "A"}, "finish_reason": "length",
                  "logprobs": {"content": [{"token": "A", "logprob": top[0]["logprob"], "top_logprobs": top}]}}
        return 200, {"choices": [choice]}, {}

    server.responder = responder
    scores = backend(server).score_labels(["q", "no-b"], ["A", "B"], top_logprobs=5)
    assert scores == pytest.approx(np.array([[0.65, 0.3], [0.6, 0.0]]))


def test_timeout_is_retried(server: FakeServer) -> None:
    import time

    def responder(payload: dict[str, Any], k: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        if k == 1:
            time.sleep(0.6)  # longer than the client's timeout
        return 200, echo_choices(payload), {}

    server.responder = responder
    out = backend(server, timeout_s=0.2).generate(["slow"], GREEDY)
    assert out[0][0].text == "slow #0" and len(server.requests) == 2


def test_key_never_in_logs(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing the SDK or httpx logs (at DEBUG) carries the key, also on errors and retries."""
    import logging

    def responder(payload: dict[str, Any], k: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        if k == 1:
            return 429, {"error": {"message": f"rate limit for key {KEY}"}}, FAST_RETRY
        return 200, echo_choices(payload), {}

    server.responder = responder
    with caplog.at_level(logging.DEBUG):
        backend(server).generate(["p"], GREEDY)
        server.responder = lambda p, k: (400, {"error": {"message": f"bad request {KEY}"}}, {})
        with pytest.raises(APIError) as err:
            backend(server).generate(["q"], GREEDY)
    assert caplog.records and KEY not in caplog.text
    assert KEY not in str(err.value) and err.value.__cause__ is None
