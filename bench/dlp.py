"""Micro-benchmark of the DLP engine: µs per KB of prompt text, per policy, with and without PII.

    .venv/bin/python -m bench.dlp

Bodies: `clean` (a ~1 KB finance question with code, dates and amounts, twice, plus a tool call and result),
`pii` (the same with a contact email, a phone number and an IBAN: ~3 detections per KB), `pii_dense` (~8 per
KB, nearly every detector) and `short_turns` (30 one-line chat turns). `block` stops at the first detection,
so its PII columns time a partial scan. Timings are best of 5 runs; this is not a test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from services.proxy.dlp import BUILTIN_POLICIES, DlpBlocked, StreamRestorer, apply, restore_completion
from services.proxy.dlp.walk import walk_request

_SYSTEM = (
    "You are a careful assistant for the finance operations team. Answer in plain English, keep answers under "
    "300 words, cite the ticket number when you refer to one, and never invent figures. When a tool is "
    "available, prefer it over guessing. Today is 2024-11-05; the fiscal year ends on 2025-03-31.\n"
)
_USER_CLEAN = (
    "Hi! I'm reviewing ticket FIN-2291 about the Q3 reconciliation. The vendor says invoice 88213 was paid "
    "twice (2 × $4,250.00) on 2024-09-14 and 2024-09-16, but our ledger export (v2.14.3, build 5521) shows "
    "only one payment. Could you summarise what to check first? Here is the relevant part of the script we "
    "use:\n\n```python\ndef reconcile(rows: list[dict], tolerance: float = 0.01) -> list[dict]:\n"
    "    seen: dict[str, float] = {}\n    for row in rows[1::2]:\n        key = f\"{row['invoice']}:{row['date']}\"\n"
    "        seen[key] = seen.get(key, 0.0) + row['amount']\n    return [r for r in rows if abs(r['amount']) > "
    "tolerance]\n```\n\nThe job ran at 10:30:00 UTC with 12 workers and finished in 3.5 s; memory peaked at "
    "512 MB. Last month the same job processed 18,442 rows and flagged 7 duplicates, which matched the "
    "vendor's statement exactly. I'd like a checklist with at most 5 items, ordered by how likely each one "
    "is to explain the gap, and a note on whether the 1-day difference between the two dates matters.\n"
)
# A realistic prompt with personal data: a vendor contact, a phone number and an IBAN in ~1 KB.
_USER_PII = _USER_CLEAN.replace(
    "The vendor says", "The vendor (Jane Doe, jane.doe@acme-corp.com, +44 20 7946 0958) says").replace(
    "only one payment.", "only one payment to GB82 WEST 1234 5698 7654 32.")
# A worst case: about eight detections per KB, of nearly every kind.
_USER_DENSE = (
    "Hi! I'm reviewing ticket FIN-2291 about the Q3 reconciliation. The vendor (contact: jane.doe@acme-corp.com, "
    "+44 20 7946 0958) says invoice 88213 was paid twice (2 × $4,250.00) on 2024-09-14 and 2024-09-16 to "
    "IBAN GB82 WEST 1234 5698 7654 32, card 4111 1111 1111 1111, but our ledger export (v2.14.3) shows only "
    "one payment. Could you summarise what to check first? The script runs on 10.20.30.40 with key "
    "AKIAIOSFODNN7EXAMPLE:\n\n```python\ndef reconcile(rows: list[dict], tolerance: float = 0.01) -> list[dict]:"
    "\n    seen: dict[str, float] = {}\n    for row in rows[1::2]:\n        key = f\"{row['invoice']}:{row['date']}\"\n"
    "        seen[key] = seen.get(key, 0.0) + row['amount']\n    return [r for r in rows if abs(r['amount']) > "
    "tolerance]\n```\n\nThe job ran at 10:30:00 UTC with 12 workers and finished in 3.5 s. Last month the "
    "same job processed 18,442 rows; the on-call (SSN on file 123-45-6789, phone (415) 555-0132) confirmed "
    "7 duplicates. Reply to jane.doe@acme-corp.com with a checklist of at most 5 items, ordered by likelihood.\n"
)


_TURNS = (
    "Can you summarise the Q3 numbers for the board?", "Sure: revenue grew 12.5% to $4.2M and churn fell to 2.1%.",
    "What drove the churn improvement?", "Mostly the onboarding changes shipped on 2024-07-02 and the new pricing.",
    "Draft a two-line note for the sales team.", "Q3 closed strong (+12.5% revenue); keep pushing annual plans.",
    "Make it friendlier.", "Great quarter, team! Revenue is up 12.5% - let's keep the annual plans coming.",
    "Thanks. Anything risky in Q4?", "Two renewals over $250k are due in November; both owners have plans.",
)


def _chat(turns: int) -> dict[str, Any]:
    """A conversation of short turns: the per-text overhead, not the scanning, dominates."""
    roles = ("user", "assistant")
    return {"model": "gpt-4o-mini", "messages": [{"role": roles[i % 2], "content": _TURNS[i % len(_TURNS)]}
                                                 for i in range(turns)]}


def _body(user: str, email: str) -> dict[str, Any]:
    arguments = json.dumps({"query": "invoice 88213 payments", "notify": email, "limit": 20})
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": [{"type": "text", "text": user}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "search_ledger", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1",
             "content": json.dumps({"rows": [{"invoice": 88213, "amount": 4250.0, "date": "2024-09-14",
                                              "payer": email}]})},
            {"role": "user", "content": user},
        ],
    }


def _text_kb(body: dict[str, Any]) -> float:
    total = 0

    def count(text: str, is_json: bool) -> str:
        nonlocal total
        total += len(text.encode())
        return text

    walk_request(body, count)
    return total / 1024


def time_call(fn: Callable[[], Any], *, seconds: float = 0.25, repeats: int = 5) -> float:
    """Best-of-`repeats` seconds per call, each repeat running enough calls to last about `seconds`."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            break
        calls *= 4
    calls = max(1, int(calls * seconds / elapsed))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _blocked(body: dict[str, Any]) -> None:
    try:
        apply(body, BUILTIN_POLICIES["block"])
    except DlpBlocked:
        pass


def _answer_events(answer: str) -> list[bytes]:
    events = []
    for start in range(0, len(answer), 7):
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": answer[start:start + 7]}, "finish_reason": None}]}
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    return events


def _stream(events: list[bytes], mapping: dict[str, str]) -> None:
    restorer = StreamRestorer(mapping)
    for event in events:
        restorer.event(event)
    restorer.finish()


def run() -> dict[str, Any]:
    """µs per KB of visited prompt text for each built-in policy, clean and with PII, plus restoring answers."""
    bodies = {"clean": _body(_USER_CLEAN, "ops-team"), "pii": _body(_USER_PII, "jane.doe@acme-corp.com"),
              "pii_dense": _body(_USER_DENSE, "jane.doe@acme-corp.com"), "short_turns": _chat(30)}
    result: dict[str, Any] = {"kb": {kind: round(_text_kb(body), 2) for kind, body in bodies.items()},
                              "redactions": {kind: apply(body, BUILTIN_POLICIES["redact"]).count
                                             for kind, body in bodies.items()}}
    for name in ("off", "redact", "redact_restore", "block"):
        policy = BUILTIN_POLICIES[name]
        row = {}
        for kind, body in bodies.items():
            fn = (lambda b=body: _blocked(b)) if name == "block" else (lambda b=body, p=policy: apply(b, p))
            row[kind] = round(time_call(fn) * 1e6 / _text_kb(body), 2)
        result[name] = row
    redaction = apply(bodies["pii_dense"], BUILTIN_POLICIES["redact_restore"])
    answer = redaction.body["messages"][-1]["content"] * 2  # an answer as long as two prompts, full of placeholders
    answer_kb = len(answer.encode()) / 1024
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}
    result["restore_completion"] = round(time_call(lambda: restore_completion(completion, redaction.mapping)) * 1e6
                                         / answer_kb, 2)
    events = _answer_events(answer)
    result["stream_restore_us_per_event"] = round(time_call(lambda: _stream(events, redaction.mapping)) * 1e6
                                                  / len(events), 2)
    clean_events = _answer_events(_USER_CLEAN * 2)
    result["stream_restore_clean_us_per_event"] = round(time_call(lambda: _stream(clean_events, redaction.mapping))
                                                        * 1e6 / len(clean_events), 2)
    return result


if __name__ == "__main__":
    numbers = run()
    kinds = ("clean", "pii", "pii_dense", "short_turns")
    print("µs per KB of prompt text (best of 5 runs)")
    print(f"{'policy':16}" + "".join(f"{kind:>12}" for kind in kinds))
    sizes = [f"{numbers['kb'][kind]} KB/{numbers['redactions'][kind]}" for kind in kinds]
    print(f"{'size/redactions':16}" + "".join(f"{size:>12}" for size in sizes))
    for policy in ("off", "redact", "redact_restore", "block"):
        print(f"{policy:16}" + "".join(f"{numbers[policy][kind]:>12}" for kind in kinds))
    print(f"restore_completion: {numbers['restore_completion']} µs per KB of answer")
    print(f"StreamRestorer: {numbers['stream_restore_us_per_event']} µs per event with placeholders "
          f"(7-character deltas), {numbers['stream_restore_clean_us_per_event']} µs per event without")
