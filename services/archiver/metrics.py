"""The archiver's Prometheus series: archives written, failures, bytes, lag, links, fetches, retention."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import SLOW_BUCKETS


class ArchiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.archived = Counter("routeur_archiver_archived", "Payload archives written to the object store",
                                registry=self.registry)
        self.failures = Counter("routeur_archiver_write_failures",
                                "Archives not written (retried later unless the reason is permanent), by reason",
                                ("reason",), registry=self.registry)
        self.bytes_written = Counter("routeur_archiver_bytes_written", "Sealed bytes written to the object store",
                                     registry=self.registry)
        self.redeliveries = Counter("routeur_archiver_redeliveries",
                                    "Archive messages delivered more than once (written again, same object)",
                                    registry=self.registry)
        self.undecodable = Counter("routeur_archiver_undecodable",
                                   "Archive messages dropped: undecodable, or ids that cannot name an object",
                                   registry=self.registry)
        self.plaintext_accepted = Counter("routeur_archiver_plaintext_accepted",
                                          "Archive messages that crossed the bus unsealed (a proxy older than "
                                          "payload sealing), archived all the same", registry=self.registry)
        self.lag = Gauge("routeur_archiver_consumer_lag", "Archive messages in the stream not yet delivered",
                         registry=self.registry)
        self.put_latency = Histogram("routeur_archiver_put_seconds", "Object store write duration",
                                     buckets=SLOW_BUCKETS, registry=self.registry)
        self.links = Counter("routeur_archiver_links", "Payload link requests, by outcome", ("outcome",),
                             registry=self.registry)
        self.fetches = Counter("routeur_archiver_fetches", "Payload fetches, by outcome", ("outcome",),
                               registry=self.registry)
        self.swept = Counter("routeur_archiver_swept", "Archives deleted by the retention sweep",
                             registry=self.registry)
        self.sweep_failures = Counter("routeur_archiver_sweep_failures", "Retention sweeps that failed",
                                      registry=self.registry)
