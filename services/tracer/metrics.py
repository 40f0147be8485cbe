"""The tracer's Prometheus series: consumer lag, batch sizes, insert latency, failed inserts, rollup repairs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import SLOW_BUCKETS


class TracerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lag = Gauge("routeur_tracer_consumer_lag", "Trace events in the stream not yet delivered to the tracer",
                         registry=self.registry)
        self.batch_size = Histogram("routeur_tracer_batch_size", "Trace events per ClickHouse insert",
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000), registry=self.registry)
        self.insert_latency = Histogram("routeur_tracer_insert_seconds", "ClickHouse insert duration",
                                        buckets=SLOW_BUCKETS, registry=self.registry)
        self.inserted = Counter("routeur_tracer_inserted", "Trace events inserted", registry=self.registry)
        self.failed_inserts = Counter("routeur_tracer_failed_inserts", "Failed ClickHouse inserts",
                                      registry=self.registry)
        self.undecodable = Counter("routeur_tracer_undecodable", "Messages dropped as undecodable",
                                   registry=self.registry)
        self.reconcile_pending = Gauge("routeur_tracer_reconcile_pending",
                                       "Suspect (organization, minute) buckets waiting for the rollup reconciler",
                                       registry=self.registry)
        self.reconcile_checked = Counter("routeur_tracer_reconcile_checked",
                                         "Suspect (organization, minute) buckets compared with traces FINAL",
                                         registry=self.registry)
        self.rollup_repairs = Counter("routeur_tracer_rollup_repairs",
                                      "Rollup buckets (organization, bucket) rebuilt because they differed from "
                                      "their source", ["grain"], registry=self.registry)
        self.reconcile_failures = Counter("routeur_tracer_reconcile_failures",
                                          "Reconciler rounds that failed (their buckets are checked again later)",
                                          registry=self.registry)
