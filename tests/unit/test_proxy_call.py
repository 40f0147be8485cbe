"""The proxy's Call through its transitions (no socket), the one overhead formula, and the tracer reply's
`code` deciding 400 vs 503."""

from __future__ import annotations

import ast
import time
from dataclasses import fields
from pathlib import Path

import pytest

from catalog import loader
from proto.routing import ATTEMPT_CLIENT_CLOSED, ATTEMPT_HTTP_ERROR, ATTEMPT_STREAM_INTERRUPTED
from proto.trace import REPLY_BAD_QUERY, REPLY_FAILED
from services.proxy import openai_wire as wire
from services.proxy.auth import Principal
from services.proxy.call import Call, overhead_header
from services.proxy.errors import InvalidRequest, ServiceUnavailable, UpstreamError
from services.proxy.payloads import Capture
from services.proxy.reads import raise_for_tracer_error
from services.router.policy import Candidate, Decision

CATALOG = loader.load()
MODEL = next(model for model in CATALOG.models if model.id == "llama-3.3-70b")
PRIMARY, FALLBACK = (Candidate(MODEL, route) for route in MODEL.routes)


def decision() -> Decision:
    return Decision(requested_model=MODEL.id, route_reason="default", model=MODEL, first_choice=PRIMARY,
                    candidates=(PRIMARY, FALLBACK))


def routed_call(*, stream: bool = False) -> Call:
    call = Call(request_id="r1", principal=Principal(organization_id="org", api_key_id="key"),
                started=time.perf_counter(), started_ms=0, endpoint="/v1/chat/completions")
    call.parsed({"model": MODEL.id, "stream": stream}, 400)
    call.routed(decision())
    return call


def test_overhead_is_the_time_not_spent_upstream() -> None:
    assert overhead_header(10.0, 0.25, 10.5) == "250.000"
    assert overhead_header(10.0, 0.0, 10.0015) == "1.500"


def test_a_fallback_after_an_upstream_error_is_in_the_trace() -> None:
    call = routed_call()
    call.admitted({"x-ratelimit-limit-requests": "60"}, capture=Capture(caller_request=b"{}"))
    call.screened(2, None)
    call.trying(PRIMARY)
    call.attempt_started(b"first")
    call.upstream_answered(b'{"error": {}}')
    call.attempted(503, ATTEMPT_HTTP_ERROR)
    call.retrying("error:503")
    call.trying(FALLBACK)
    call.attempt_started(b"second")
    assert call.capture is not None and call.capture.upstream_response == b""  # layers are the served attempt's
    call.upstream_answered(b'{"ok": true}')
    call.attempted(200, None)
    call.answered(200, wire.Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15))
    trace = call.trace()
    assert [(a.provider, a.status_code, a.error_type) for a in trace.attempts] == [
        (PRIMARY.route.provider, 503, ATTEMPT_HTTP_ERROR), (FALLBACK.route.provider, 200, None)]
    assert trace.route == PRIMARY.key and trace.fallback == f"{FALLBACK.key}; error:503"
    assert (trace.status_code, trace.total_tokens, trace.redactions) == (200, 15, 2)
    assert trace.cost_usd > 0 and call.response_headers == {"x-ratelimit-limit-requests": "60"}
    assert call.capture.upstream_request == b"second" and call.capture.upstream_response == b'{"ok": true}'


def test_the_upstream_time_ends_with_the_attempt_even_without_an_answer() -> None:
    call = routed_call()
    call.trying(PRIMARY)
    call.attempt_started(b"")
    call.attempted(504, "timeout")  # a timeout never calls upstream_answered
    assert call.upstream_ended >= call.upstream_started > 0
    assert call.trace().upstream_latency_ms >= 0


def test_a_broken_stream_and_a_caller_hanging_up_use_the_shared_vocabulary() -> None:
    broken = routed_call(stream=True)
    broken.trying(PRIMARY)
    broken.attempt_started(b"")
    broken.answered(200)
    broken.stream_broken(None, "upstream_stream_interrupted")
    trace = broken.trace()
    assert (trace.status_code, trace.error_type, trace.error_code) == (
        502, ATTEMPT_STREAM_INTERRUPTED, "upstream_stream_interrupted")
    assert [(a.status_code, a.error_type) for a in trace.attempts] == [(502, ATTEMPT_STREAM_INTERRUPTED)]

    gone = routed_call(stream=True)
    gone.trying(PRIMARY)
    gone.attempt_started(b"")
    gone.answered(200)
    sent = [b'data: {"choices": [{"delta": {"content": "12345678"}}]}\n\n']
    gone.saw_chunk(wire.event_head(sent[0]), None)
    gone.first_byte_sent()
    gone.caller_gone(sent)
    trace = gone.trace()
    assert (trace.status_code, trace.error_type) == (499, ATTEMPT_CLIENT_CLOSED)
    assert trace.usage_estimated and (trace.prompt_tokens, trace.completion_tokens) == (100, 2)
    assert trace.ttft_ms is not None


def test_a_failure_keeps_the_errors_status_and_code() -> None:
    call = routed_call()
    call.failed(UpstreamError("no", status=429, code="rate_limit_exceeded"))
    trace = call.trace()
    assert (trace.status_code, trace.error_type, trace.error_code, trace.cost_usd) == (
        429, "upstream_error", "rate_limit_exceeded", 0)


def test_the_tracer_reply_code_decides_400_or_503_never_the_message() -> None:
    raise_for_tracer_error(None, REPLY_BAD_QUERY, "log")  # no error: nothing to raise
    with pytest.raises(InvalidRequest, match="^'group_by' must be one of"):
        raise_for_tracer_error("'group_by' must be one of model, provider", REPLY_BAD_QUERY, "usage")
    with pytest.raises(ServiceUnavailable, match="usage query failed; try again shortly"):
        raise_for_tracer_error("bad query: looks like the caller's fault", REPLY_FAILED, "usage")


def test_only_call_py_writes_a_calls_fields() -> None:
    """Every other proxy module goes through Call's transitions (an assignment to `call.<field>` is a bypass)."""
    names = {f.name for f in fields(Call)}
    found = []
    for path in sorted((Path(__file__).resolve().parents[2] / "services" / "proxy").rglob("*.py")):
        if path.name == "call.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                for item in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(item, ast.Attribute) and item.attr in names and isinstance(item.value, ast.Name) \
                            and item.value.id == "call":
                        found.append(f"{path.name}:{node.lineno}: {ast.unparse(item)}")
    assert found == []
