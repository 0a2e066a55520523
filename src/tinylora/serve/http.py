"""The OpenAI-compatible HTTP front of :mod:`tinylora.serve.scheduler` (FastAPI + uvicorn).

    GET  /v1/models             the base and every servable adapter
    GET  /metrics               Prometheus text: requests by status and adapter, tokens, latency and
                                time-to-first-token histograms, batch rows, queue depth, adapters
    POST /v1/completions        prompt → text (stream: server-sent events)
    POST /v1/chat/completions   messages → the tokenizer's chat template → text

A request picks its skill with ``model``: an adapter's file stem, or the base's name. Sampling:
``max_tokens`` (chat: or ``max_completion_tokens``), ``temperature`` (0 = greedy), ``top_p``, ``stop``,
``seed``, ``n``. Also: ``logprobs`` (completions: 0–5 alternatives; chat: ``logprobs`` +
``top_logprobs`` 0–20; the model's own log-softmax, before temperature and top-p; not with
streaming), a list of up to 16 prompts, ``echo``, ``stream_options.include_usage``, ``user``
(accepted, not used). Anything else (``presence_penalty`` ≠ 0, ``logit_bias``, ``best_of`` ≠ n,
``suffix``, ``tools``, unknown fields) is refused with 400 naming it, never ignored. Sample i of a
request with seed S draws from the stream ``stream_key(S, i)`` (the same stream
``generate_tokens(..., seeds=[stream_key(S, i)])`` uses), so a seeded completion is reproducible
and equals generating with that adapter alone. Errors use OpenAI's shape ``{"error": {...}}``:
400 bad request, 401 wrong key, 404 unknown model (listing the known ones), 429 queue full (with
``Retry-After``), 504 past the request timeout. Every finished completion request is one JSON line
on the ``tinylora.serve.requests`` logger (id, adapter, status, tokens, latency, time to first token;
the prompt only with ``log_prompts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any

from fastapi import Request as HTTPRequest  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import StreamingResponse

from .._core.seeding import stream_key
from .metrics import Metrics
from .requests import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    HTTPError,
    check_fields,
    number_field,
    token_texts,
)
from .scheduler import QueueFull, Registry, Request, Scheduler, UnknownModel


class Api:
    """The routes and what they share: the key check, the model name → adapter, sampling fields,
    submitting samples and collecting (or streaming) their events. One method per route."""

    def __init__(self, scheduler: Scheduler, base_name: str, *, api_key: str | None = None,
                 request_timeout_s: float = 600.0, max_tokens_limit: int = 4096, log_prompts: bool = False):
        self.scheduler, self.base_name, self.api_key = scheduler, base_name, api_key
        self.metrics = Metrics(log_prompts=log_prompts)
        self.request_timeout_s, self.max_tokens_limit = request_timeout_s, max_tokens_limit
        self.tok = scheduler.tokenizer
        self.registry: Registry = scheduler.registry

    # --- what the routes share ---------------------------------------------------------------
    def check_key(self, request: HTTPRequest) -> None:
        if self.api_key is None:
            return
        got = request.headers.get("authorization", "")
        if not secrets.compare_digest(got, f"Bearer {self.api_key}"):
            raise HTTPError(401, "missing or wrong API key", "authentication_error")

    def adapter_of(self, name: Any) -> int:
        if name == self.base_name:
            return -1
        if not isinstance(name, str):
            raise HTTPError(400, "model must be a string")
        try:
            return self.registry.index(name)
        except UnknownModel:
            raise HTTPError(404, f"unknown model {name!r}; known: {', '.join([self.base_name] + self.registry.names)}",
                            "not_found_error") from None

    def sampling_of(self, body: dict) -> dict:
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
            raise HTTPError(400, "stop must be a string or a list of up to 4 strings")
        seed = body.get("seed")
        if seed is None:
            seed = secrets.randbits(63)
        seed = number_field({"seed": seed}, "seed", 0, int, 0, 2**63 - 1)
        if body.get("max_completion_tokens") is not None:
            if body.get("max_tokens") is not None:
                raise HTTPError(400, "give max_tokens or max_completion_tokens, not both")
            body = {**body, "max_tokens": body["max_completion_tokens"]}
        n = number_field(body, "n", 1, int, 1, 16)
        best_of = body.get("best_of")
        if best_of is not None and (isinstance(best_of, bool) or not isinstance(best_of, int) or best_of != n):
            raise HTTPError(400, f"best_of={best_of!r} is not supported (only best_of = n, i.e. no reranking)")
        return {"max_tokens": number_field(body, "max_tokens", 16, int, 1, self.max_tokens_limit),
                "temperature": number_field(body, "temperature", 1.0, float, 0.0, 2.0),
                "top_p": number_field(body, "top_p", 1.0, float, 1e-6, 1.0), "n": n,
                "stop": stop, "seed": seed}

    def submit(self, adapter: int, prompts: list[list[int]], s: dict, logprobs: int | None = None) -> list[Request]:
        """Prompt p's sample j is choice p·n + j, drawn from stream_key(seed, p·n + j)."""
        n = s["n"]
        reqs = [Request(adapter=adapter, prompt_ids=ids, max_tokens=s["max_tokens"],
                        temperature=s["temperature"], top_p=s["top_p"], seed=stream_key(s["seed"], p * n + j),
                        stop=s["stop"], timeout_s=self.request_timeout_s, logprobs=logprobs)
                for p, ids in enumerate(prompts) for j in range(n)]
        done = []
        try:
            for r in reqs:
                done.append(self.scheduler.submit(r))
        except QueueFull as e:
            for r in done:
                r.cancel()
            raise HTTPError(429, f"server busy ({e}); retry shortly", "rate_limit_error", {"Retry-After": "1"}) from None
        return reqs

    async def next_event(self, r: Request):
        return await asyncio.get_running_loop().run_in_executor(None, r.events.get)

    async def collect(self, reqs: list[Request], http: HTTPRequest, info: dict) -> list[tuple[str, str]]:
        out = []
        for r in reqs:
            text = ""
            while True:
                if await http.is_disconnected():
                    for q in reqs:
                        q.cancel()
                    return []
                kind, value = await self.next_event(r)
                if kind == "delta":
                    info.setdefault("first", time.monotonic())
                    text += value
                else:
                    if value == "timeout":
                        raise HTTPError(504, f"request took longer than {self.request_timeout_s:g} s", "timeout")
                    if value.startswith("error") or value == "cancelled":
                        raise HTTPError(500 if value.startswith("error") else 503, f"generation {value}", "server_error")
                    out.append((text, value))
                    break
        return out

    def usage(self, prompts: list[list[int]], reqs: list[Request]) -> dict:
        p, c = sum(len(ids) for ids in prompts), sum(len(r.tokens) for r in reqs)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def stream(self, reqs: list[Request], http: HTTPRequest, make_chunk, final: dict | None = None,
                     info: dict | None = None):
        """Server-sent events: the samples' deltas as they come, then each finish, then ``final`` (the
        usage chunk, when stream_options.include_usage asks for it), then [DONE]."""
        pending = {i: r for i, r in enumerate(reqs)}
        info = info if info is not None else {}
        try:
            while pending:
                for i, r in list(pending.items()):
                    if await http.is_disconnected():
                        raise asyncio.CancelledError
                    kind, value = await self.next_event(r)
                    if kind == "delta":
                        info.setdefault("first", time.monotonic())
                        yield f"data: {json.dumps(make_chunk(i, value, None))}\n\n"
                    else:
                        yield f"data: {json.dumps(make_chunk(i, '', value))}\n\n"
                        del pending[i]
            if final is not None:
                yield f"data: {json.dumps(final())}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            for r in reqs:  # a client that left frees its rows
                if r.finish_reason is None:
                    r.cancel()
            self.finish(info, 200, reqs)

    # --- what an operator sees: one record per request -------------------------------------------
    def begin(self, route: str) -> dict:
        return {"id": secrets.token_hex(6), "route": route, "t0": time.monotonic(), "adapter": None,
                "prompt_tokens": 0, "stream": False, "prompt": None}

    def finish(self, info: dict, status: int, reqs: list[Request] | None = None, error: str | None = None) -> None:
        now = time.monotonic()
        self.metrics.record(rid=info["id"], route=info["route"], status=status, adapter=info["adapter"],
                            prompt_tokens=info["prompt_tokens"],
                            completion_tokens=sum(len(r.tokens) for r in reqs or []), latency_s=now - info["t0"],
                            ttft_s=info["first"] - info["t0"] if "first" in info else None, stream=info["stream"],
                            finish=[r.finish_reason or "cancelled" for r in reqs] if reqs else None, error=error,
                            prompt=info["prompt"])

    async def recorded(self, route: str, handler, request: HTTPRequest):
        """Run a completion route and record it once: its error status, its result, or (streaming)
        when the stream ends."""
        info = self.begin(route)
        try:
            out, reqs = await handler(request, info)
        except HTTPError as e:
            self.finish(info, e.status, error=e.message)
            raise
        if not isinstance(out, StreamingResponse):
            self.finish(info, 200, reqs)
        return out

    async def completions(self, request: HTTPRequest):
        return await self.recorded("completions", self._completions, request)

    async def chat(self, request: HTTPRequest):
        return await self.recorded("chat", self._chat, request)

    async def metrics_text(self, request: HTTPRequest):
        from fastapi.responses import PlainTextResponse

        self.check_key(request)
        return PlainTextResponse(self.metrics.render(self.scheduler.stats()), media_type="text/plain; version=0.0.4")

    def encode(self, text: str, special: bool) -> list[int]:
        ids = self.tok(text, add_special_tokens=special)["input_ids"]
        if not ids:
            raise HTTPError(400, "the prompt is empty")
        return ids

    # --- the routes ----------------------------------------------------------------------------
    async def models(self, request: HTTPRequest):
        self.check_key(request)
        self.registry.scan()
        now = int(time.time())
        data = []
        for n in [self.base_name] + self.registry.names:
            entry = {"id": n, "object": "model", "created": now, "owned_by": "tinylora"}
            if n in self.registry.audits:  # serve --max-kl: the figures it passed on
                entry["audit"] = {k: self.registry.audits[n][k] for k in ("kl_mean", "kl_p95", "kl_max",
                                                                          "changed_share", "prompts", "tokens")}
            data.append(entry)
        return {"object": "list", "data": data}

    def wants_usage(self, body: dict) -> bool:
        return bool((body.get("stream_options") or {}).get("include_usage"))

    async def _completions(self, request: HTTPRequest, info: dict):
        self.check_key(request)
        body = await _json(request)
        check_fields(body, COMPLETION_FIELDS)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise HTTPError(400, "prompt must be a string or a non-empty list of strings (token-id prompts are "
                                 "not supported)")
        if len(prompts) > 16:
            raise HTTPError(400, f"at most 16 prompts per request, got {len(prompts)}")
        logprobs = body.get("logprobs")
        if logprobs is not None:
            logprobs = number_field(body, "logprobs", 0, int, 0, 5)
            if body.get("stream"):
                raise HTTPError(400, "logprobs with stream: true is not supported; ask without streaming")
            if body.get("echo"):
                raise HTTPError(400, "echo with logprobs (the prompt's log-probs) is not supported")
        from ..generation.generate import prompt_special_tokens

        adapter, s = self.adapter_of(body.get("model")), self.sampling_of(body)
        info["adapter"], info["stream"], info["prompt"] = body["model"], bool(body.get("stream")), prompts
        ids = [self.encode(p, prompt_special_tokens(self.tok)) for p in prompts]
        info["prompt_tokens"] = sum(len(x) for x in ids)
        reqs = self.submit(adapter, ids, s, logprobs)
        echo = (lambda i: prompts[i // s["n"]]) if body.get("echo") else (lambda i: "")
        cid, created, model = f"cmpl-{secrets.token_hex(8)}", int(time.time()), body["model"]
        if body.get("stream"):
            started = set()

            def chunk(i, text, finish):
                if i not in started:  # the echoed prompt leads the choice's first chunk
                    started.add(i)
                    text = echo(i) + text
                return {"id": cid, "object": "text_completion", "created": created, "model": model,
                        "choices": [{"index": i, "text": text, "finish_reason": finish, "logprobs": None}]}

            final = (lambda: {"id": cid, "object": "text_completion", "created": created, "model": model,
                              "choices": [], "usage": self.usage(ids, reqs)}) if self.wants_usage(body) else None
            return StreamingResponse(self.stream(reqs, request, chunk, final, info), media_type="text/event-stream"), reqs
        results = await self.collect(reqs, request, info)

        def lp(r: Request):
            if logprobs is None:
                return None
            pieces = token_texts(self.tok, [t for t, _, _ in r.token_logprobs])
            offsets = [sum(len(x) for x in pieces[:k]) for k in range(len(pieces))]
            return {"tokens": pieces, "token_logprobs": [v for _, v, _ in r.token_logprobs],
                    "top_logprobs": [{self.tok.decode([a]): b for a, b in top} for _, _, top in r.token_logprobs]
                    if logprobs else None, "text_offset": offsets}

        return {"id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": i, "text": echo(i) + t, "finish_reason": f, "logprobs": lp(r)}
                            for i, ((t, f), r) in enumerate(zip(results, reqs))], "usage": self.usage(ids, reqs)}, reqs

    async def _chat(self, request: HTTPRequest, info: dict):
        self.check_key(request)
        body = await _json(request)
        check_fields(body, CHAT_FIELDS)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in
                ("system", "user", "assistant") for m in messages):
            raise HTTPError(400, "messages must be a non-empty list of {role: system|user|assistant, content: str}")
        if not getattr(self.tok, "chat_template", None):
            raise HTTPError(400, "this model's tokenizer has no chat template; use /v1/completions")
        want = body.get("logprobs")
        if want is not None and not isinstance(want, bool):
            raise HTTPError(400, f"logprobs must be true or false, got {want!r}")
        top = body.get("top_logprobs")
        if top is not None:
            top = number_field(body, "top_logprobs", 0, int, 0, 20)
            if not want:
                raise HTTPError(400, "top_logprobs needs logprobs: true")
        if want and body.get("stream"):
            raise HTTPError(400, "logprobs with stream: true is not supported; ask without streaming")
        logprobs = (top or 0) if want else None
        adapter, s = self.adapter_of(body.get("model")), self.sampling_of(body)
        text = self.tok.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                       add_generation_prompt=True, tokenize=False)
        info["adapter"], info["stream"], info["prompt"] = body["model"], bool(body.get("stream")), text
        ids = [self.encode(text, False)]
        info["prompt_tokens"] = len(ids[0])
        reqs = self.submit(adapter, ids, s, logprobs)
        cid, created, model = f"chatcmpl-{secrets.token_hex(8)}", int(time.time()), body["model"]
        if body.get("stream"):
            def chunk(i, text, finish):
                delta = {"content": text} if text else ({} if finish else {"role": "assistant", "content": ""})
                return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [{"index": i, "delta": delta, "finish_reason": finish}]}
            final = (lambda: {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                              "choices": [], "usage": self.usage(ids, reqs)}) if self.wants_usage(body) else None
            return StreamingResponse(self.stream(reqs, request, chunk, final, info), media_type="text/event-stream"), reqs
        results = await self.collect(reqs, request, info)

        def entry(t: int, v: float) -> dict:
            piece = self.tok.decode([t])
            return {"token": piece, "logprob": v, "bytes": list(piece.encode())}

        def lp(r: Request):
            if logprobs is None:
                return None
            return {"content": [{**entry(t, v), "top_logprobs": [entry(a, b) for a, b in alts]}
                                for t, v, alts in r.token_logprobs]}

        return {"id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                             "logprobs": lp(r)} for i, ((t, f), r) in enumerate(zip(results, reqs))],
                "usage": self.usage(ids, reqs)}, reqs

    async def health(self):
        return self.scheduler.stats()


def create_app(scheduler: Scheduler, base_name: str, *, api_key: str | None = None,
               request_timeout_s: float = 600.0, max_tokens_limit: int = 4096, log_prompts: bool = False):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title="tinylora serve")
    api = Api(scheduler, base_name, api_key=api_key, request_timeout_s=request_timeout_s,
              max_tokens_limit=max_tokens_limit, log_prompts=log_prompts)

    @app.exception_handler(HTTPError)
    async def _err(request, e: HTTPError):
        return JSONResponse({"error": {"message": e.message, "type": e.kind, "code": e.status}}, status_code=e.status,
                            headers=e.headers)

    app.get("/v1/models")(api.models)
    app.post("/v1/completions")(api.completions)
    app.post("/v1/chat/completions")(api.chat)
    app.get("/health")(api.health)
    app.get("/metrics")(api.metrics_text)
    app.state.api = api
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
          device: str = "cpu", log_prompts: bool = False, max_kl: float | None = None,
          audit_reference: str = "general") -> None:
    """Load the base, the adapters, start the scheduler and uvicorn; SIGTERM/Ctrl-C stop cleanly."""
    import logging

    import uvicorn

    from ..models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_name)  # first: a folder without one is named before the slow load
    policy = None
    if max_kl is not None:
        from ..audit.policy import DriftPolicy

        policy = DriftPolicy(max_kl, reference=audit_reference, base_name=model_name)  # a bad set: before the load
    registry_model = load_model(model_name, dtype=dtype, device=device)
    if policy is not None:
        print(f"tinylora serve: auditing adapters' off-task drift (--max-kl {max_kl:g}, {len(policy.prompts)} "
              f"{audit_reference} prompts)", flush=True)
    registry = Registry(registry_model, adapters, policy=policy, tokenizer=tokenizer)
    scheduler = Scheduler(registry_model, tokenizer, registry, max_batch=max_batch, max_queue=max_queue)
    base_name = model_name.rstrip("/").rsplit("/", 1)[-1]
    app = create_app(scheduler, base_name, api_key=api_key, request_timeout_s=request_timeout_s,
                     log_prompts=log_prompts)

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
