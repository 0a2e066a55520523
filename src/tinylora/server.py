"""The OpenAI-compatible HTTP front of :mod:`tinylora.serving` (FastAPI + uvicorn).

    GET  /v1/models             the base and every servable adapter
    POST /v1/completions        prompt → text (stream: server-sent events)
    POST /v1/chat/completions   messages → the tokenizer's chat template → text

A request picks its skill with ``model``: an adapter's file stem, or the base's name. Sampling:
``max_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``stop``, ``seed``, ``n``. Sample i of a
request with seed S draws from the stream ``stream_key(S, i)`` (the same stream
``generate_tokens(..., seeds=[stream_key(S, i)])`` uses), so a seeded completion is reproducible
and equals generating with that adapter alone. Errors use OpenAI's shape ``{"error": {...}}``:
400 bad request, 401 wrong key, 404 unknown model (listing the known ones), 429 queue full (with
``Retry-After``), 504 past the request timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any

from fastapi import Request as HTTPRequest  # module level: FastAPI resolves the handlers' annotations here

from .seeding import stream_key
from .serving import QueueFull, Registry, Request, Scheduler, UnknownModel


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def _number(body: dict, key: str, default, kind, lo=None, hi=None):
    v = body.get(key, default)
    if v is None:
        v = default
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise HTTPError(400, f"{key} must be an integer, got {v!r}")
    if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise HTTPError(400, f"{key} must be a number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise HTTPError(400, f"{key} must be in [{lo}, {hi}], got {v!r}")
    return kind(v)


def create_app(scheduler: Scheduler, base_name: str, *, api_key: str | None = None,
               request_timeout_s: float = 600.0, max_tokens_limit: int = 4096):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="tinylora serve")
    tok = scheduler.tokenizer
    registry: Registry = scheduler.registry

    @app.exception_handler(HTTPError)
    async def _err(request, e: HTTPError):
        return JSONResponse({"error": {"message": e.message, "type": e.kind, "code": e.status}}, status_code=e.status,
                            headers=e.headers)

    def check_key(request: HTTPRequest) -> None:
        if api_key is None:
            return
        got = request.headers.get("authorization", "")
        if not secrets.compare_digest(got, f"Bearer {api_key}"):
            raise HTTPError(401, "missing or wrong API key", "authentication_error")

    def adapter_of(name: Any) -> int:
        if name == base_name:
            return -1
        if not isinstance(name, str):
            raise HTTPError(400, "model must be a string")
        try:
            return registry.index(name)
        except UnknownModel:
            raise HTTPError(404, f"unknown model {name!r}; known: {', '.join([base_name] + registry.names)}",
                            "not_found_error") from None

    def sampling_of(body: dict) -> dict:
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
            raise HTTPError(400, "stop must be a string or a list of up to 4 strings")
        seed = body.get("seed")
        if seed is None:
            seed = secrets.randbits(63)
        seed = _number({"seed": seed}, "seed", 0, int, 0, 2**63 - 1)
        return {"max_tokens": _number(body, "max_tokens", 16, int, 1, max_tokens_limit),
                "temperature": _number(body, "temperature", 1.0, float, 0.0, 2.0),
                "top_p": _number(body, "top_p", 1.0, float, 1e-6, 1.0), "n": _number(body, "n", 1, int, 1, 16),
                "stop": stop, "seed": seed}

    def submit(adapter: int, prompt_ids: list[int], s: dict) -> list[Request]:
        reqs = [Request(adapter=adapter, prompt_ids=prompt_ids, max_tokens=s["max_tokens"],
                        temperature=s["temperature"], top_p=s["top_p"], seed=stream_key(s["seed"], i),
                        stop=s["stop"], timeout_s=request_timeout_s) for i in range(s["n"])]
        done = []
        try:
            for r in reqs:
                done.append(scheduler.submit(r))
        except QueueFull as e:
            for r in done:
                r.cancel()
            raise HTTPError(429, f"server busy ({e}); retry shortly", "rate_limit_error", {"Retry-After": "1"}) from None
        return reqs

    async def next_event(r: Request):
        return await asyncio.get_running_loop().run_in_executor(None, r.events.get)

    async def collect(reqs: list[Request], http: HTTPRequest) -> list[tuple[str, str]]:
        out = []
        for r in reqs:
            text = ""
            while True:
                if await http.is_disconnected():
                    for q in reqs:
                        q.cancel()
                    return []
                kind, value = await next_event(r)
                if kind == "delta":
                    text += value
                else:
                    if value == "timeout":
                        raise HTTPError(504, f"request took longer than {request_timeout_s:g} s", "timeout")
                    if value.startswith("error") or value == "cancelled":
                        raise HTTPError(500 if value.startswith("error") else 503, f"generation {value}", "server_error")
                    out.append((text, value))
                    break
        return out

    def usage(prompt_ids: list[int], reqs: list[Request]) -> dict:
        c = sum(len(r.tokens) for r in reqs)
        return {"prompt_tokens": len(prompt_ids), "completion_tokens": c, "total_tokens": len(prompt_ids) + c}

    async def stream(reqs: list[Request], http: HTTPRequest, make_chunk):
        """Server-sent events: the samples' deltas as they come, then each finish, then [DONE]."""
        pending = {i: r for i, r in enumerate(reqs)}
        try:
            while pending:
                for i, r in list(pending.items()):
                    if await http.is_disconnected():
                        raise asyncio.CancelledError
                    kind, value = await next_event(r)
                    if kind == "delta":
                        yield f"data: {json.dumps(make_chunk(i, value, None))}\n\n"
                    else:
                        yield f"data: {json.dumps(make_chunk(i, '', value))}\n\n"
                        del pending[i]
            yield "data: [DONE]\n\n"
        finally:
            for r in reqs:  # a client that left frees its rows
                if r.finish_reason is None:
                    r.cancel()

    def encode(text: str, special: bool) -> list[int]:
        ids = tok(text, add_special_tokens=special)["input_ids"]
        if not ids:
            raise HTTPError(400, "the prompt is empty")
        return ids

    @app.get("/v1/models")
    async def models(request: HTTPRequest):
        check_key(request)
        registry.scan()
        now = int(time.time())
        return {"object": "list", "data": [{"id": n, "object": "model", "created": now, "owned_by": "tinylora"}
                                           for n in [base_name] + registry.names]}

    @app.post("/v1/completions")
    async def completions(request: HTTPRequest):
        check_key(request)
        body = await _json(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise HTTPError(400, "prompt must be a string (or a list holding one string)")
        from .generation import prompt_special_tokens

        adapter, s = adapter_of(body.get("model")), sampling_of(body)
        ids = encode(prompt, prompt_special_tokens(tok))
        reqs = submit(adapter, ids, s)
        cid, created, model = f"cmpl-{secrets.token_hex(8)}", int(time.time()), body["model"]
        if body.get("stream"):
            def chunk(i, text, finish):
                return {"id": cid, "object": "text_completion", "created": created, "model": model,
                        "choices": [{"index": i, "text": text, "finish_reason": finish, "logprobs": None}]}
            return StreamingResponse(stream(reqs, request, chunk), media_type="text/event-stream")
        results = await collect(reqs, request)
        return {"id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": i, "text": t, "finish_reason": f, "logprobs": None}
                            for i, (t, f) in enumerate(results)], "usage": usage(ids, reqs)}

    @app.post("/v1/chat/completions")
    async def chat(request: HTTPRequest):
        check_key(request)
        body = await _json(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in
                ("system", "user", "assistant") for m in messages):
            raise HTTPError(400, "messages must be a non-empty list of {role: system|user|assistant, content: str}")
        if not getattr(tok, "chat_template", None):
            raise HTTPError(400, "this model's tokenizer has no chat template; use /v1/completions")
        adapter, s = adapter_of(body.get("model")), sampling_of(body)
        text = tok.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                       add_generation_prompt=True, tokenize=False)
        ids = encode(text, False)
        reqs = submit(adapter, ids, s)
        cid, created, model = f"chatcmpl-{secrets.token_hex(8)}", int(time.time()), body["model"]
        if body.get("stream"):
            def chunk(i, text, finish):
                delta = {"content": text} if text else ({} if finish else {"role": "assistant", "content": ""})
                return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [{"index": i, "delta": delta, "finish_reason": finish}]}
            return StreamingResponse(stream(reqs, request, chunk), media_type="text/event-stream")
        results = await collect(reqs, request)
        return {"id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f}
                            for i, (t, f) in enumerate(results)], "usage": usage(ids, reqs)}

    @app.get("/health")
    async def health():
        return scheduler.stats()

    return app


async def _json(request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPError(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object")
    if "model" not in body:
        raise HTTPError(400, "model is required")
    return body


def serve(model_name: str, adapters: str, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_batch: int = 64, max_queue: int = 256, request_timeout_s: float = 600.0, dtype: str = "fp32",
          device: str = "cpu") -> None:
    """Load the base, the adapters, start the scheduler and uvicorn; SIGTERM/Ctrl-C stop cleanly."""
    import logging

    import uvicorn

    from .loading import load_model, load_tokenizer

    registry_model = load_model(model_name, dtype=dtype, device=device)
    tokenizer = load_tokenizer(model_name)
    registry = Registry(registry_model, adapters)
    scheduler = Scheduler(registry_model, tokenizer, registry, max_batch=max_batch, max_queue=max_queue)
    base_name = model_name.rstrip("/").rsplit("/", 1)[-1]
    app = create_app(scheduler, base_name, api_key=api_key, request_timeout_s=request_timeout_s)

    @app.on_event("shutdown")
    def _stop():
        scheduler.stop(timeout=10.0)

    scheduler.start()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"tinylora serve: {base_name} + {len(registry.names)} adapters from {adapters} "
          f"({len(registry.refused)} refused) on http://{host}:{port}/v1", flush=True)
    server = _uvicorn_server_class()(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    timeout_graceful_shutdown=15))
    server.run()


def _uvicorn_server_class():
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises a captured SIGTERM after its graceful shutdown, so the process would end
        killed by the signal; a server stopped on request ends with exit code 0 instead."""

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals.clear()  # handled: the shutdown was graceful

    return GracefulServer
