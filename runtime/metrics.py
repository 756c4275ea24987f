"""Prometheus metrics of a server, rendered in the text exposition format (/metrics)."""
from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    """Request counts, a latency histogram and NPU work, safe to update from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)        # protocol, model, code
        self.latency: dict[str, list[int]] = {}                                   # protocol -> bucket counts
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.inferences: dict[str, int] = defaultdict(int)                        # model
        self.cycles: dict[str, int] = defaultdict(int)
        self.in_flight = 0

    def request(self, protocol: str, model: str, code: str, seconds: float) -> None:
        with self._lock:
            self.requests[(protocol, model, code)] += 1
            buckets = self.latency.setdefault(protocol, [0] * len(LATENCY_BUCKETS))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self.latency_sum[protocol] += seconds
            self.latency_count[protocol] += 1

    def inference(self, model: str, npu_cycles: int, items: int = 1) -> None:
        with self._lock:
            self.inferences[model] += items
            self.cycles[model] += int(npu_cycles)

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP npu_requests_total Requests answered, by protocol, model and status code.",
                     "# TYPE npu_requests_total counter"]
            for (protocol, model, code), n in sorted(self.requests.items()):
                lines.append(f"npu_requests_total{_labels(protocol=protocol, model=model, code=code)} {n}")
            lines += ["# HELP npu_request_duration_seconds Time from request to reply, by protocol.",
                      "# TYPE npu_request_duration_seconds histogram"]
            for protocol, buckets in sorted(self.latency.items()):
                for bound, n in zip(LATENCY_BUCKETS, buckets):
                    lines.append(f"npu_request_duration_seconds_bucket{_labels(protocol=protocol, le=repr(bound))} {n}")
                count = self.latency_count[protocol]
                lines.append(f"npu_request_duration_seconds_bucket{_labels(protocol=protocol, le='+Inf')} {count}")
                lines.append(f"npu_request_duration_seconds_sum{_labels(protocol=protocol)} {self.latency_sum[protocol]:.6f}")
                lines.append(f"npu_request_duration_seconds_count{_labels(protocol=protocol)} {count}")
            lines += ["# HELP npu_inferences_total Inferences run (batch items), by model.",
                      "# TYPE npu_inferences_total counter"]
            lines += [f"npu_inferences_total{_labels(model=m)} {n}" for m, n in sorted(self.inferences.items())]
            lines += ["# HELP npu_cycles_total Modelled NPU cycles spent, by model.",
                      "# TYPE npu_cycles_total counter"]
            lines += [f"npu_cycles_total{_labels(model=m)} {n}" for m, n in sorted(self.cycles.items())]
            lines += ["# HELP npu_requests_in_flight Requests being processed.",
                      "# TYPE npu_requests_in_flight gauge", f"npu_requests_in_flight {self.in_flight}"]
        return "\n".join(lines) + "\n"
