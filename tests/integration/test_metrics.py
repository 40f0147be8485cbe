"""Prometheus series and the overhead header, read from the running processes."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import openai
import pytest

from launcher.stack import Stack
from tests.conftest import http_json, wait_for


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:  # noqa: S310 (loopback)
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{series} not exposed"
    return float(match.group(1))


def test_proxy_metrics_and_overhead_header(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)
    before = _scrape(stack.metrics_url("proxy"))
    label = 'routeur_proxy_requests_total{model="gpt-4o-mini",provider="openai",status="200"}'
    start = _value(before, label) if label in before else 0.0
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                           messages=[{"role": "user", "content": "hi"}])
    overhead = float(raw.headers["x-routeur-overhead-ms"])
    assert 0 <= overhead < 1000
    list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                        stream=True))
    status, _ = http_json("POST", f"{stack.proxy_url}/v1/chat/completions", token="rk-nobody", body={})
    assert status == 401
    text = _scrape(stack.metrics_url("proxy"))
    assert _value(text, label) == start + 2
    assert _value(text, "routeur_proxy_overhead_seconds_count") >= 2
    assert 'routeur_proxy_upstream_latency_seconds_bucket{le="0.005",provider="openai"}' in text
    assert 'routeur_proxy_ttft_seconds_count{provider="openai"}' in text
    assert _value(text, "routeur_proxy_in_flight_requests") == 0
    assert "routeur_proxy_trace_backlog" in text


def test_tracer_metrics_count_inserts(stack: Stack) -> None:
    tracer = stack.children["tracer"].url
    failed_before = _value(_scrape(tracer), "routeur_tracer_failed_inserts_total")
    # traffic of its own: an earlier test may have restarted the tracer, which resets its counters
    openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0) \
        .chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "count me"}])
    inserted = wait_for(lambda: _value(_scrape(tracer), "routeur_tracer_inserted_total"))
    text = _scrape(tracer)
    assert inserted >= 1 and _value(text, "routeur_tracer_batch_size_count") >= 1
    assert _value(text, "routeur_tracer_failed_inserts_total") == failed_before
    assert _value(text, "routeur_tracer_consumer_lag") >= 0
    assert "routeur_tracer_insert_seconds_bucket" in text


def test_billing_metrics_count_admissions_and_refusals(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    billing = stack.children["billing"].url
    text = wait_for(lambda: (lambda t: t if _value(t, "routeur_billing_settlements_total") >= 1 else None)(
        _scrape(billing)))
    assert _value(text, "routeur_billing_admissions_total") >= 1
    assert _value(text, "routeur_billing_open_reservations") >= 0
    assert "routeur_billing_refusals_total" in text or "# TYPE routeur_billing_refusals counter" in text


def test_archiver_metrics_count_archives_bytes_and_links(stack: Stack) -> None:
    from tests.integration.test_dlp_gateway import org_key
    from tests.integration.test_payload_archive import _request, archived_url

    _, key = org_key(stack, archive_payloads=True)
    _, request_id = _request(stack, key)
    archived_url(stack, key, request_id)  # written, and a link minted
    text = _scrape(stack.children["archiver"].url)
    assert _value(text, "routeur_archiver_archived_total") >= 1
    assert _value(text, "routeur_archiver_bytes_written_total") > 0
    assert "# TYPE routeur_archiver_write_failures_total counter" in text  # labelled by reason once one happens
    assert _value(text, "routeur_archiver_consumer_lag") >= 0
    assert "routeur_archiver_put_seconds_bucket" in text
    assert re.search(r'^routeur_archiver_links_total\{outcome="[a-z_]+"\} [1-9]', text, re.MULTILINE)


def test_router_metrics_expose_breaker_states(stack: Stack) -> None:
    openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0) \
        .chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    text = wait_for(lambda: (lambda t: t if "routeur_router_breaker_state{" in t else None)(
        _scrape(stack.children["router"].url)))
    assert re.search(r'^routeur_router_breaker_state\{route="openai/gpt-4o-mini"\} 0\.0$', text, re.MULTILINE)
    assert "routeur_router_snapshot_version" in text


def test_proxy_metrics_are_not_on_the_public_port(stack: Stack) -> None:
    """/metrics lives on the internal PROXY_METRICS_PORT listener; the public API answers 404 for it."""
    for name in ("proxy", "proxy-2"):
        assert stack.metrics_url(name) != stack.children[name].url
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{stack.children[name].url}/metrics", timeout=10)  # noqa: S310 (loopback)
        assert refused.value.code == 404 and b"routeur_proxy" not in refused.value.read()
        assert "routeur_proxy_in_flight_requests" in _scrape(stack.metrics_url(name))
