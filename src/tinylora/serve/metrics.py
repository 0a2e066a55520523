"""What an operator watches: Prometheus counters and histograms for ``GET /metrics``, and one structured
log line per request (``tinylora.serve.requests``, JSON; no prompt text unless asked for).

Written by hand in Prometheus' text exposition format (version 0.0.4) so the server needs no client
library; thread-safe, since requests finish on the event loop and tokens are counted there too.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict

log = logging.getLogger("tinylora.serve.requests")

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets, self.counts, self.sum, self.n = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, x: float) -> None:
        for i, b in enumerate(self.buckets):
            if x <= b:
                self.counts[i] += 1
        self.sum += x
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        tail = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{tail} {self.sum:.6f}", f"{name}_count{tail} {self.n}"]


def _label(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self, log_prompts: bool = False):
        self.log_prompts = log_prompts
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)  # (status, adapter) → count
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.latency = Histogram()
        self.ttft = Histogram()

    def record(self, *, rid: str, route: str, status: int, adapter: str | None, prompt_tokens: int = 0,
               completion_tokens: int = 0, latency_s: float, ttft_s: float | None = None, stream: bool = False,
               finish: list[str] | None = None, error: str | None = None, prompt: str | None = None) -> None:
        """One finished request: counted, observed, and logged as one JSON line."""
        with self._lock:
            self.requests[(str(status), adapter or "")] += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.latency.observe(latency_s)
            if ttft_s is not None:
                self.ttft.observe(ttft_s)
        entry = {"id": rid, "route": route, "status": status, "adapter": adapter, "prompt_tokens": prompt_tokens,
                 "completion_tokens": completion_tokens, "latency_s": round(latency_s, 4),
                 "ttft_s": None if ttft_s is None else round(ttft_s, 4), "stream": stream}
        if finish:
            entry["finish"] = finish
        if error:
            entry["error"] = error
        if self.log_prompts and prompt is not None:
            entry["prompt"] = prompt
        log.info(json.dumps(entry))

    def render(self, stats: dict) -> str:
        """The exposition text: these counters and histograms, and the scheduler's gauges (``stats``)."""
        with self._lock:
            lines = ["# HELP tinylora_requests_total Finished HTTP requests by status and adapter.",
                     "# TYPE tinylora_requests_total counter"]
            for (status, adapter), n in sorted(self.requests.items()):
                lines.append(f'tinylora_requests_total{{status="{status}",adapter="{_label(adapter)}"}} {n}')
            lines += ["# HELP tinylora_prompt_tokens_total Prompt tokens of finished requests.",
                      "# TYPE tinylora_prompt_tokens_total counter", f"tinylora_prompt_tokens_total {self.prompt_tokens}",
                      "# HELP tinylora_completion_tokens_total Generated tokens of finished requests (rate() of it is "
                      "tokens/s).", "# TYPE tinylora_completion_tokens_total counter",
                      f"tinylora_completion_tokens_total {self.completion_tokens}",
                      "# HELP tinylora_request_latency_seconds Time from arrival to the last byte.",
                      "# TYPE tinylora_request_latency_seconds histogram", *self.latency.lines(
                          "tinylora_request_latency_seconds"),
                      "# HELP tinylora_time_to_first_token_seconds Time from arrival to the first generated text.",
                      "# TYPE tinylora_time_to_first_token_seconds histogram", *self.ttft.lines(
                          "tinylora_time_to_first_token_seconds")]
        gauges = {"tinylora_batch_rows": ("Rows in the running batch.", stats["running"]),
                  "tinylora_queue_depth": ("Requests waiting to join the batch.", stats["waiting"]),
                  "tinylora_cache_positions": ("KV-cache positions of the running batch.", stats.get("cache_positions", 0)),
                  "tinylora_decode_steps_total": ("Decode steps the scheduler has run.", stats["steps"]),
                  "tinylora_adapters_loaded": ("Servable adapters.", stats["adapters"]),
                  "tinylora_adapters_refused": ("Adapter files refused (wrong base, corrupt, ...).",
                                                len(stats["refused"]))}
        for name, (help_, value) in gauges.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
