"""`/metrics` in Prometheus' text format (version 0.0.4), written out by hand: counters, gauges, and
cumulative histograms (`_bucket{le="x"}` counts observations ≤ x, then `_sum` and `_count`).

    llmlab_requests_running / _waiting   engine requests with rows decoding / queued or prefilling
    llmlab_rows_running                  rows (samples) decoding: 0 once every request ended or aborted
    llmlab_prompt_tokens_total / llmlab_generation_tokens_total
    llmlab_requests_aborted_total        requests whose client went away before they finished
    llmlab_time_to_first_token_seconds   submit → first token of a request's first sample
    llmlab_time_per_output_token_seconds between consecutive tokens of one sample
    llmlab_kv_cache_bytes / llmlab_kv_cache_usage_ratio (rows in use / rows; a fixed slot per row)
    llmlab_http_requests_total{route, status}
"""

from __future__ import annotations

import bisect
import threading

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Counter:
    def __init__(self, lock: threading.Lock):
        self.value, self.lock = 0, lock

    def inc(self, by: float = 1) -> None:
        with self.lock:
            self.value += by


class Histogram:
    def __init__(self, buckets: tuple[float, ...], lock: threading.Lock):
        self.buckets, self.lock = buckets, lock
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum, self.count = 0.0, 0

    def observe(self, x: float) -> None:
        with self.lock:
            self.counts[bisect.bisect_left(self.buckets, x)] += 1
            self.sum += x
            self.count += 1

    def lines(self, name: str) -> list[str]:
        out, total = [f"# TYPE {name} histogram"], 0
        for le, c in zip([*map(str, self.buckets), "+Inf"], self.counts):
            total += c
            out.append(f'{name}_bucket{{le="{le}"}} {total}')
        return [*out, f"{name}_sum {self.sum}", f"{name}_count {self.count}"]


class Metrics:
    """Shared by the engine thread (tokens, timings, engine gauges) and the handlers (HTTP counts)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.prompt_tokens = Counter(self.lock)
        self.generation_tokens = Counter(self.lock)
        self.aborted = Counter(self.lock)
        self.ttft = Histogram(TTFT_BUCKETS, self.lock)
        self.per_token = Histogram(TOKEN_BUCKETS, self.lock)
        self.engine = {"rows": 0, "running": 0, "waiting": 0, "kv_bytes": 0, "kv_usage": 0.0}
        self.http: dict[tuple[str, int], int] = {}

    def set_engine(self, rows: int, running: int, waiting: int, kv_bytes: int, max_rows: int) -> None:
        with self.lock:
            self.engine = {
                "rows": rows,
                "running": running,
                "waiting": waiting,
                "kv_bytes": kv_bytes,
                "kv_usage": rows / max_rows if max_rows else 0.0,
            }

    def count_http(self, route: str, status: int) -> None:
        with self.lock:
            self.http[route, status] = self.http.get((route, status), 0) + 1

    def render(self) -> str:
        with self.lock:
            e, http = dict(self.engine), dict(self.http)
            lines = [
                *_gauge("llmlab_requests_running", e["running"]),
                *_gauge("llmlab_requests_waiting", e["waiting"]),
                *_gauge("llmlab_rows_running", e["rows"]),
                *_gauge("llmlab_kv_cache_bytes", e["kv_bytes"]),
                *_gauge("llmlab_kv_cache_usage_ratio", e["kv_usage"]),
                "# TYPE llmlab_prompt_tokens_total counter",
                f"llmlab_prompt_tokens_total {self.prompt_tokens.value}",
                "# TYPE llmlab_requests_aborted_total counter",
                f"llmlab_requests_aborted_total {self.aborted.value}",
                "# TYPE llmlab_generation_tokens_total counter",
                f"llmlab_generation_tokens_total {self.generation_tokens.value}",
                *self.ttft.lines("llmlab_time_to_first_token_seconds"),
                *self.per_token.lines("llmlab_time_per_output_token_seconds"),
                "# TYPE llmlab_http_requests_total counter",
            ]
        lines += [
            f'llmlab_http_requests_total{{route="{r}",status="{s}"}} {n}'
            for (r, s), n in sorted(http.items())
        ]
        return "\n".join(lines) + "\n"


def _gauge(name: str, value: float) -> list[str]:
    return [f"# TYPE {name} gauge", f"{name} {value}"]
