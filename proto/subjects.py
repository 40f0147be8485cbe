"""NATS subject, stream and consumer names: the only place these strings are typed."""

from __future__ import annotations

import msgspec

# JetStream streams (durable, file storage)
TRACE_STREAM = "ROUTEUR_TRACES"
TRACE_SUBJECT = "routeur.traces.v1"
TRACE_CONSUMER = "tracer"

PAYLOAD_STREAM = "ROUTEUR_PAYLOADS"
PAYLOAD_SUBJECT = "routeur.payloads.v1"
PAYLOAD_CONSUMER = "archiver"

LEDGER_STREAM = "ROUTEUR_LEDGER"
LEDGER_SUBJECT = "routeur.ledger.v1"

# JetStream KV: the router's last published HealthSnapshot, read by proxies at start and by a restarted router
ROUTER_KV_BUCKET = "ROUTEUR_ROUTING"
ROUTER_KV_KEY = "snapshot"

# JetStream KV: dashboard sessions ended by sign-out (key: the session id), watched by every proxy
SESSION_REVOCATIONS_BUCKET = "ROUTEUR_SESSION_REVOCATIONS"

# Core NATS request/reply (no persistence)
TRACER_GET = "routeur.tracer.get"
TRACER_LOGS = "routeur.tracer.logs"
TRACER_USAGE = "routeur.tracer.usage"  # proto.trace.UsageQuery -> UsageReply
ROUTER_ATTEMPTS = "routeur.router.attempts"
ROUTER_ATTEMPTS_BATCH = "routeur.router.attempts.batch"  # proto.routing.AttemptBatch (no reply)
ROUTER_SNAPSHOT = "routeur.router.snapshot"  # proto.routing.HealthSnapshot, on change and every second
BILLING_ADMIT = "routeur.billing.admit"
BILLING_SETTLE = "routeur.billing.settle"
BILLING_SETTLE_BATCH = "routeur.billing.settle.batch"  # proto.billing.SettleBatch -> SettleBatchReply
BILLING_LEASE = "routeur.billing.lease"  # proto.billing.LeaseRequest -> LeaseReply (spend leases)
BILLING_AUTH = "routeur.billing.auth"
ARCHIVER_LINK = "routeur.archiver.link"  # proto.payload.PayloadLinkRequest -> PayloadLinkReply
ARCHIVER_FETCH = "routeur.archiver.fetch"  # proto.payload.PayloadFetchRequest -> PayloadFetchReply
BILLING_KEYS = "routeur.billing.keys"  # proto.billing.KeysQuery -> KeysReply (dashboard Keys page)


class StreamSpec(msgspec.Struct, frozen=True):
    """How a JetStream stream is created; every service ensures the streams it uses at start."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float = 7 * 24 * 3600.0
    duplicate_window_s: float = 600.0
    max_bytes: int = -1
    work_queue: bool = False  # messages are deleted once a consumer acks them


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(TRACE_STREAM, (TRACE_SUBJECT,)),
    # Payload bodies leave the bus as soon as the archiver has stored them encrypted.
    StreamSpec(PAYLOAD_STREAM, (PAYLOAD_SUBJECT,), max_age_s=3 * 24 * 3600.0, work_queue=True),
    StreamSpec(LEDGER_STREAM, (LEDGER_SUBJECT,), max_age_s=0.0),
)
