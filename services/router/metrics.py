"""The router's Prometheus series: breaker state per route, attempts by outcome, snapshots, rules reloads."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from proto.routing import CLOSED, HALF_OPEN, OPEN, RouteHealth

STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.breaker_state = Gauge("routeur_router_breaker_state", "Breaker per route: 0 closed, 1 half-open, 2 open",
                                   ("route",), registry=self.registry)
        self.error_ratio = Gauge("routeur_router_route_error_ratio", "Failures / outcomes in the sliding window",
                                 ("route",), registry=self.registry)
        self.latency = Gauge("routeur_router_route_latency_seconds", "Latency EWMA (TTFT when streamed)",
                             ("route",), registry=self.registry)
        self.attempts = Counter("routeur_router_attempts", "Attempt reports by route and outcome (ok, failure, "
                                "ignored)", ("route", "outcome"), registry=self.registry)
        self.transitions = Counter("routeur_router_breaker_transitions", "Breaker state changes by route and new "
                                   "state", ("route", "state"), registry=self.registry)
        self.snapshot_version = Gauge("routeur_router_snapshot_version", "Version of the last published snapshot",
                                      registry=self.registry)
        self.snapshots = Counter("routeur_router_snapshots_published", "Snapshots published (changes and "
                                 "heartbeats)", registry=self.registry)
        self.rules_reloads = Counter("routeur_router_rules_reloads", "Rules file reloads by result (applied, "
                                     "rejected)", ("result",), registry=self.registry)
        self.bad_reports = Counter("routeur_router_bad_reports", "Attempt reports that could not be decoded",
                                   registry=self.registry)
        self.report_batches = Counter("routeur_router_report_batches", "Attempt report batches received",
                                      registry=self.registry)
        self.bad_batches = Counter("routeur_router_bad_report_batches", "Attempt report batches that could not be "
                                   "decoded (their reports are lost)", registry=self.registry)

    def observe_snapshot(self, version: int, routes: tuple[RouteHealth, ...], label: dict[str, str]) -> None:
        """Gauges from a published snapshot; `label` maps route keys to their metric label."""
        self.snapshot_version.set(version)
        self.snapshots.inc()
        for health in routes:
            route = label.get(health.route)
            if route is None:
                continue
            self.breaker_state.labels(route).set(STATE_VALUE.get(health.state, 0))
            self.error_ratio.labels(route).set(health.failures / health.requests if health.requests else 0.0)
            if health.latency_ms is not None:
                self.latency.labels(route).set(health.latency_ms / 1000)
