"""Fault plans per model (errors, latency, dropped streams, hangs) and the registry that applies them."""

from __future__ import annotations

from typing import Annotated

import msgspec

DEFAULT_KEY = "*"

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class FaultPlan(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How the emulator misbehaves for one model; every field's default means "behave normally".

    `status`, `hang`, `drop_after_chunks` and `stall_after_chunks` are failures and obey `fail_times` (fail
    only the first N matching requests, 0 = every request); the delays apply to every matching request.
    `stall_after_chunks` (OpenAI chat streams) sends that many chunks, then nothing more, keeping the
    connection open until the client gives up: an upstream that stalls mid-stream.
    """

    status: Annotated[int, msgspec.Meta(ge=0, le=599)] = 0
    fail_times: NonNegative = 0
    latency_ms: NonNegative = 0
    ttft_ms: NonNegative = 0
    chunk_interval_ms: NonNegative = 0
    drop_after_chunks: Annotated[int, msgspec.Meta(ge=-1)] = -1
    stall_after_chunks: Annotated[int, msgspec.Meta(ge=-1)] = -1
    hang: bool = False
    retry_after: NonNegative | None = None
    omit_usage: bool = False  # ignore stream_options.include_usage, like providers that never send stream usage
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    def __post_init__(self) -> None:
        if self.status and not 400 <= self.status <= 599:
            raise ValueError(f"status must be 0 (no error) or an HTTP error status 400-599, got {self.status}")


class Fault(msgspec.Struct, frozen=True):
    """The decision for one request: the plan that matched and whether its failures apply this time."""

    plan: FaultPlan
    failing: bool

    @property
    def status(self) -> int:
        return self.plan.status if self.failing else 0

    @property
    def hang(self) -> bool:
        return self.plan.hang and self.failing

    @property
    def drop_after_chunks(self) -> int:
        return self.plan.drop_after_chunks if self.failing else -1

    @property
    def stall_after_chunks(self) -> int:
        return self.plan.stall_after_chunks if self.failing else -1


_PLAN_DECODER = msgspec.json.Decoder(FaultPlan)
_PLANS_DECODER = msgspec.json.Decoder(dict[str, FaultPlan])


def decode_plan(data: bytes) -> FaultPlan:
    """Decode one JSON fault plan; raises msgspec.ValidationError / DecodeError naming the bad field."""
    return _PLAN_DECODER.decode(data or b"{}")


def decode_plans(data: bytes | str) -> dict[str, FaultPlan]:
    """Decode a JSON object mapping model id (or "*") to a fault plan."""
    return _PLANS_DECODER.decode(data)


class FaultRegistry:
    """Plans keyed by model id ("*" is the default for other models) plus per-key request counters."""

    def __init__(self, *, fallback: FaultPlan | None = None, plans: dict[str, FaultPlan] | None = None) -> None:
        self._fallback = fallback or FaultPlan()
        self._plans: dict[str, FaultPlan] = {}
        self._counts: dict[str, int] = {}
        for model, plan in (plans or {}).items():
            self.set(model, plan)

    def set(self, model: str, plan: FaultPlan) -> None:
        """Install `plan` for `model` (or "*") and restart its `fail_times` count."""
        self._plans[model] = plan
        self._counts[model] = 0

    def clear(self) -> None:
        """Forget every plan and counter; requests then get the fallback plan."""
        self._plans.clear()
        self._counts.clear()

    def snapshot(self) -> dict[str, FaultPlan]:
        """A copy of the installed plans."""
        return dict(self._plans)

    def decide(self, model: str) -> Fault:
        """Count one request for `model` and say which faults apply to it."""
        key = model if model in self._plans else DEFAULT_KEY if DEFAULT_KEY in self._plans else None
        if key is None:
            return Fault(plan=self._fallback, failing=False)
        plan = self._plans[key]
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return Fault(plan=plan, failing=plan.fail_times == 0 or count <= plan.fail_times)
