"""Billing's Prometheus series: admissions, refusals by reason, spend leases, open reservations, settlements."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class BillingMetrics:
    def __init__(self, open_reservations: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.admissions = Counter("routeur_billing_admissions", "Requests admitted", registry=self.registry)
        self.refusals = Counter("routeur_billing_refusals", "Requests refused, by reason", ("reason",),
                                registry=self.registry)
        self.leases = Counter("routeur_billing_leases", "Spend leases granted (proxies admit from them locally)",
                               registry=self.registry)
        self.settlements = Counter("routeur_billing_settlements", "Settlements applied", registry=self.registry)
        self.reservations = Gauge("routeur_billing_open_reservations", "Reservations not yet settled or expired",
                                  registry=self.registry)
        self.reservations.set_function(open_reservations)
