"""The proxy's Prometheus series: requests, gateway overhead, upstream latency and TTFT, in-flight."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proto.trace import TraceEvent
from services.common.metrics import FAST_BUCKETS, SLOW_BUCKETS


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("routeur_proxy_requests", "Requests served, by outcome",
                                ("model", "provider", "status"), registry=self.registry)
        self.overhead = Histogram("routeur_proxy_overhead_seconds",
                                  "Time spent in Routeur, excluding the upstream call", buckets=FAST_BUCKETS,
                                  registry=self.registry)
        self.upstream_latency = Histogram("routeur_proxy_upstream_latency_seconds", "Upstream call duration",
                                          ("provider",), buckets=SLOW_BUCKETS, registry=self.registry)
        self.ttft = Histogram("routeur_proxy_ttft_seconds", "Time to first streamed byte", ("provider",),
                              buckets=SLOW_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("routeur_proxy_in_flight_requests", "Requests being served",
                               registry=self.registry)
        self.fallbacks = Counter("routeur_proxy_fallbacks", "Requests served by a fallback route", ("model",),
                                 registry=self.registry)
        self.refusals = Counter("routeur_proxy_admission_refusals", "Requests refused before the upstream call",
                                ("code",), registry=self.registry)
        self.trace_backlog = Gauge("routeur_proxy_trace_backlog", "Traces waiting to be published",
                                   registry=self.registry)
        self.payload_backlog = Gauge("routeur_proxy_payload_backlog_bytes",
                                     "Payload archives waiting in memory to be published", registry=self.registry)
        self.payloads_dropped = Counter("routeur_proxy_payload_archives_dropped",
                                        "Payload archives dropped because the memory buffer was full (NATS down)",
                                        registry=self.registry)
        self.redactions = Counter("routeur_proxy_dlp_redactions", "DLP substitutions made in request bodies",
                                  registry=self.registry)

    def observe(self, trace: TraceEvent) -> None:
        """Record one finished request from its trace."""
        self.requests.labels(trace.model, trace.provider, str(trace.status_code)).inc()
        if trace.redactions:
            self.redactions.inc(trace.redactions)
        self.overhead.observe(max(trace.latency_ms - trace.upstream_latency_ms, 0.0) / 1000)
        if trace.upstream_latency_ms:
            self.upstream_latency.labels(trace.provider).observe(trace.upstream_latency_ms / 1000)
        if trace.stream and trace.ttft_ms is not None:
            self.ttft.labels(trace.provider).observe(trace.ttft_ms / 1000)
        if trace.fallback:
            self.fallbacks.labels(trace.model).inc()
        if trace.status_code in (401, 402, 429) and not trace.upstream_latency_ms:
            self.refusals.labels(trace.error_code or str(trace.status_code)).inc()
