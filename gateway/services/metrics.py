"""Prometheus metrics through prometheus-client.

With several worker processes every process writes its samples to PROMETHEUS_MULTIPROC_DIR (set
by `gateway run --workers N` before the workers start) and a scrape of any worker aggregates all.
"""

from __future__ import annotations

import os
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# `*_created` series (one per label set, a timestamp) double the output and say nothing a
# scraper needs; counters restart at zero with the process either way.
disable_created_metrics()

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "Requests by surface, app, decision (allow or deny:<code>) and mode (full-proxy, "
            "or forward-auth: decisions asked for by another proxy).",
            ["surface", "app", "decision", "mode"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from the request's arrival to the end of the response, by surface and mode.",
            ["surface", "mode"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            "gateway_policy_reloads_total",
            "Policy reloads by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.policy_generation = Gauge(
            "gateway_policy_generation",
            "Generation of the policy snapshot in force.",
            registry=r,
            multiprocess_mode="max",
        )
        self.logins = Counter(
            "gateway_logins_total",
            "Sign-in attempts by result (success, failure, banned).",
            ["result"],
            registry=r,
        )
        self.notifications_sent = Counter(
            "gateway_notifications_sent_total", "Mails delivered, by kind.", ["kind"], registry=r
        )
        self.notifications_failed = Counter(
            "gateway_notifications_failed_total",
            "Recipients given up after a permanent refusal (5xx), by kind.",
            ["kind"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "gateway_outbox_pending",
            "Notifications waiting in the outbox (shared by every instance).",
            registry=r,
            multiprocess_mode="max",
        )
        self.outbox_oldest_pending = Gauge(
            "gateway_outbox_oldest_pending_seconds",
            "Age of the oldest notification waiting in the outbox.",
            registry=r,
            multiprocess_mode="max",
        )
        self.system_messages = Gauge(
            "gateway_system_message",
            "1 while a system message (a condition an operator must act on) is in force, by key.",
            ["key"],
            registry=r,
            multiprocess_mode="max",
        )
        self.sign_ins = Counter(
            "gateway_sign_ins_total",
            "Sign-in attempts past the password step by result (success, failure, banned) and "
            'country (ISO code; "none" when not globally routable or unknown).',
            ["result", "country"],
            registry=r,
        )
        self.incidents_open = Gauge(
            "gateway_incidents_open",
            "Security incidents in state open (read from the state store).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._children: dict[tuple[str, str, str, str], object] = {}
        self._latency_children: dict[tuple[str, str], object] = {}
        # Request metrics are counted in plain ints and handed to prometheus-client in bulk
        # (`flush`: every second and before each scrape). Its per-observation locking and, for
        # the histogram, its Python loop over the buckets cost ~5 us per request; a scrape sees
        # counts at most one second old. With several workers (multiprocess mode) a scrape of
        # one reads the others' files, so there every request is flushed at once.
        self._pending: dict[tuple[str, str, str, str], int] = {}
        self._pending_latency: dict[tuple[str, str], list[float]] = {}

    def observe_request(
        self, surface: str, app: str, decision: str, seconds: float, mode: str = "full-proxy"
    ) -> None:
        key = (surface, app, decision, mode)
        self._pending[key] = self._pending.get(key, 0) + 1
        slots = self._pending_latency.get((surface, mode))
        if slots is None:
            slots = self._pending_latency[surface, mode] = [0.0] * (len(_BUCKETS) + 2)
        slots[bisect_left(_BUCKETS, seconds)] += 1  # the last slot before the sum is +Inf
        slots[-1] += seconds
        if self.multiprocess:
            # Another worker's scrape reads this process's files: they must be current.
            self.flush()

    def flush(self) -> None:
        """Hand the counts gathered since the last flush to prometheus-client."""
        pending, self._pending = self._pending, {}
        for key, count in pending.items():
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.requests.labels(*key)
            child.inc(count)  # type: ignore[attr-defined]
        latency, self._pending_latency = self._pending_latency, {}
        for key, slots in latency.items():
            hist = self._latency_children.get(key)
            if hist is None:
                hist = self._latency_children[key] = self.latency.labels(*key)
            # prometheus-client has no bulk observe: its per-bucket values (the same objects
            # observe() increments, also in multiprocess mode) take the counts directly.
            buckets = hist._buckets  # type: ignore[attr-defined]
            for index, count in enumerate(slots[:-1]):
                if count:
                    buckets[index].inc(count)
            hist._sum.inc(slots[-1])  # type: ignore[attr-defined]

    async def flush_periodically(self) -> None:
        """For the app's once-a-second job (with several workers, others' scrapes read files)."""
        self.flush()

    def render(self) -> tuple[bytes, str]:
        self.flush()
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
