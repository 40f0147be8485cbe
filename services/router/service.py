"""The router's NATS edge: attempt reports in, routing snapshots out (on change and every second), rules reload."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from proto import codec, subjects
from proto.routing import CLOSED, AttemptBatch, AttemptReport, HealthSnapshot, RuleSet
from services.common.health import add_health_routes
from services.common.ids import new_ulid
from services.common.logs import get_logger
from services.common.metrics import add_metrics_route
from services.common.settings import SettingsError
from services.router.errors import RulesError
from services.router.health import HealthBook, Transition
from services.router.metrics import RouterMetrics
from services.router.settings import Settings
from services.router.store import SnapshotStore
from services.router.watch import RulesFile

log = get_logger()
_ATTEMPT = msgspec.json.Decoder(AttemptReport)
_BATCH = msgspec.json.Decoder(AttemptBatch)
_TICK_S = 0.2  # how often cool-downs are checked (a breaker turns half-open at most this late)


class Router:
    """Owns the health book, the rules in force and the snapshot version; publishes what proxies route by.

    Scaling: one router process. Health is the sum of every proxy's reports, so it lives in one place; the
    proxies never wait on the router (they route on its last snapshot), so a restart costs only freshness.
    """

    def __init__(self, nc: Client, store: SnapshotStore, *, settings: Settings,
                 previous: HealthSnapshot | None = None) -> None:
        self._nc = nc
        self._store = store
        self._settings = settings
        self.book = HealthBook(settings.breaker)
        self.metrics = RouterMetrics()
        self.router_id = new_ulid()
        self.version = previous.version if previous is not None else 0
        self._previous = previous
        self._labels = {route.key: route.key for model in settings.catalog.models for route in model.routes}
        self._file = RulesFile(settings.rules_path, catalog=settings.catalog) if settings.rules_path else None
        self.rules = RuleSet()
        self.rules_digest = ""
        self.rules_error: str | None = None
        self.rules_loaded_at: float | None = None
        self._dirty = True
        self._urgent = asyncio.Event()
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._kv_task: asyncio.Task[bool] | None = None
        self._bad_messages = 0
        if previous is not None:
            self.book.restore(previous.routes, published_at=previous.published_at)

    async def start(self) -> None:
        """Load the rules (a bad file falls back to the last good rules in the KV, else SettingsError),
        subscribe, publish a first snapshot, start the publish and reload loops."""
        if self._file is not None:
            await self._load_initial(self._file)
        # Proxies send one AttemptBatch per send tick. The single-report subject stays subscribed, with the
        # same handler, for proxies from before batching during a rolling upgrade (drop it once none are left).
        self._subs.append(await self._nc.subscribe(subjects.ROUTER_ATTEMPTS_BATCH, cb=self._on_attempts))
        self._subs.append(await self._nc.subscribe(subjects.ROUTER_ATTEMPTS, cb=self._on_attempts))
        await self.publish()
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="router-publish"))
        if self._file is not None:
            self._tasks.append(asyncio.create_task(self._reload_loop(self._file), name="router-rules-reload"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self._subs:
            await sub.unsubscribe()
        await self.publish()  # the latest states into the KV for the next router and new proxies
        if self._kv_task is not None:
            await asyncio.gather(self._kv_task, return_exceptions=True)

    async def _load_initial(self, file: RulesFile) -> None:
        result = await asyncio.to_thread(file.poll)
        if isinstance(result, tuple):
            self._apply_rules(*result)
            return
        message = result.message if isinstance(result, RulesError) else f"{file.path}: unchanged"
        previous = self._previous
        if previous is None or not previous.rules_digest:
            raise SettingsError(f"ROUTER_RULES: {message}")
        self.rules, self.rules_digest, self.rules_error = previous.rules, previous.rules_digest, message
        self.metrics.rules_reloads.labels("rejected").inc()
        log.error("rules_rejected", error=message, kept=self.rules_digest, detail="using the last good rules "
                  "from the previous router's snapshot; fix the file and it is picked up without a restart")

    def _apply_rules(self, ruleset: RuleSet, digest: str) -> None:
        changed = digest != self.rules_digest or self.rules_error is not None
        self.rules, self.rules_digest, self.rules_error = ruleset, digest, None
        if changed:
            self.rules_loaded_at = time.time()
            self.metrics.rules_reloads.labels("applied").inc()
            log.info("rules_loaded", digest=digest, rules=len(ruleset.rules), default_model=ruleset.default_model)
            self._changed()

    async def reload(self) -> None:
        """Poll the rules file once; a bad file keeps the rules in force and says why (log, readiness)."""
        if self._file is None:
            return
        result = await asyncio.to_thread(self._file.poll)
        if result is None:
            return
        if isinstance(result, RulesError):
            self.rules_error = result.message
            self.metrics.rules_reloads.labels("rejected").inc()
            log.error("rules_rejected", error=result.message, kept=self.rules_digest)
            self._changed()
            return
        self._apply_rules(*result)

    async def _reload_loop(self, file: RulesFile) -> None:
        while True:
            await asyncio.sleep(self._settings.reload_interval_s)
            try:
                await self.reload()
            except Exception:  # keep watching whatever happened to one poll
                log.exception("rules_reload_failed", path=str(file.path))

    def _changed(self) -> None:
        self._dirty = True
        self._urgent.set()

    async def _on_attempts(self, msg: Msg) -> None:
        """ROUTER_ATTEMPTS_BATCH (an AttemptBatch) or ROUTER_ATTEMPTS (one AttemptReport, older proxies).
        An undecodable message is counted and logged without its content, and changes nothing."""
        batch = msg.subject == subjects.ROUTER_ATTEMPTS_BATCH
        try:
            reports = _BATCH.decode(msg.data).reports if batch else (_ATTEMPT.decode(msg.data),)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._bad_message(batch, len(msg.data), exc)
            return
        if batch:
            self.metrics.report_batches.inc()
        for report in reports:
            self.record(report)

    def _bad_message(self, batch: bool, size: int, exc: Exception) -> None:
        counter = self.metrics.bad_batches if batch else self.metrics.bad_reports
        counter.inc()
        self._bad_messages += 1
        if self._bad_messages <= 10 or self._bad_messages % 1000 == 0:  # a broken sender must not flood the log
            # The error's class only: msgspec's messages may quote a value of the payload.
            log.warning("attempt_report_undecodable", subject=subjects.ROUTER_ATTEMPTS_BATCH if batch else
                        subjects.ROUTER_ATTEMPTS, error=type(exc).__name__, bytes=size, seen=self._bad_messages)

    def record(self, report: AttemptReport) -> None:
        """Feed one attempt's outcome to the health book (whichever message it came in)."""
        outcome, changes = self.book.record_attempt(report)
        self.metrics.attempts.labels(self._labels.get(report.route, "other"), outcome).inc()
        if outcome != "ignored":
            self._dirty = True
        for change in changes:
            self._transition(change)

    def _transition(self, change: Transition) -> None:
        self.metrics.transitions.labels(self._labels.get(change.route, "other"), change.after).inc()
        log.info(f"breaker_{change.after}", route=change.route, reason=change.reason,
                 cooldown_s=change.cooldown_s or None)
        self._changed()

    async def _publish_loop(self) -> None:
        interval = self._settings.publish_interval_s
        due = time.monotonic() + interval
        while True:
            try:
                await asyncio.wait_for(self._urgent.wait(), min(_TICK_S, interval))
            except TimeoutError:
                pass
            try:
                for change in self.book.tick():
                    self._transition(change)
                now = time.monotonic()
                if self._urgent.is_set() or now >= due:
                    self._urgent.clear()
                    due = now + interval
                    await self.publish()
            except Exception:  # never stop publishing because one round failed
                log.exception("snapshot_publish_failed")
                await asyncio.sleep(interval)

    def snapshot(self) -> HealthSnapshot:
        """The current snapshot; a new version when anything changed since the last one."""
        if self._dirty:
            self.version += 1
            self._dirty = False
        return HealthSnapshot(version=self.version, routes=self.book.snapshot(), published_at=time.time(),
                              router_id=self.router_id, rules=self.rules, rules_digest=self.rules_digest,
                              rules_error=self.rules_error, probe_timeout_s=self._settings.breaker.probe_timeout_s,
                              publish_interval_s=self._settings.publish_interval_s)

    async def publish(self) -> None:
        """Publish on ROUTER_SNAPSHOT now, and store in the KV unless the previous store is still in flight."""
        snapshot = self.snapshot()
        data = codec.encode(snapshot)
        try:
            await self._nc.publish(subjects.ROUTER_SNAPSHOT, data)
        except Exception as exc:  # disconnected: the next round publishes again
            log.warning("snapshot_not_published", error=type(exc).__name__)
        self.metrics.observe_snapshot(snapshot.version, snapshot.routes, self._labels)
        if self._kv_task is None or self._kv_task.done():
            self._kv_task = asyncio.create_task(self._store.put(data), name="router-kv-put")

    async def ready(self) -> dict[str, object]:
        connected = self._nc.is_connected
        routes = self.book.snapshot()
        return {
            "ready": connected, "nats": connected, "snapshot_version": self.version,
            "kv": "ok" if self._store.last_error is None else f"error: {self._store.last_error}",
            "rules": {"path": str(self._settings.rules_path) if self._settings.rules_path else None,
                      "digest": self.rules_digest, "rules": len(self.rules.rules),
                      "default_model": self.rules.default_model, "loaded_at": _iso(self.rules_loaded_at),
                      "error": self.rules_error},
            "routes_not_closed": {health.route: health.state for health in routes if health.state != CLOSED},
        }


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def make_app(router: Router) -> web.Application:
    app = web.Application()
    add_health_routes(app, router.ready)
    add_metrics_route(app, router.metrics.registry)
    return app
