"""The rollup reconciler's comparison (reconcile.py): which buckets' rollup rows differ from their source's, and how
buckets group into query spans and coarser grains. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.tracer import schema
from services.tracer.suspects import Bucket

Group = tuple[str, str, str]  # api_key_id, model, provider
Sums = tuple[Any, ...]


@dataclass(frozen=True)
class Drift:
    bucket: Bucket
    before: int  # requests the rollup counted
    after: int  # requests the source counts (what the rebuild writes)


def by_bucket(found: Iterable[Sequence[Any]]) -> dict[Bucket, dict[Group, Sums]]:
    """Rows of (bucket, organization, api key, model, provider, sums…) by (organization, bucket), then group."""
    out: dict[Bucket, dict[Group, Sums]] = {}
    for bucket, org, key, model, provider, *sums in found:
        out.setdefault((org, int(bucket)), {})[(key, model, provider)] = tuple(sums)
    return out


def drifts(pairs: Iterable[Bucket], source: dict[Bucket, dict[Group, Sums]],
           rollup: dict[Bucket, dict[Group, Sums]]) -> list[Drift]:
    """The buckets whose rollup groups differ from the source's (any group, any sum), sorted."""
    requests = schema.ROLLUP_SUMS.index("requests")
    out = []
    for pair in sorted(set(pairs)):
        want, have = source.get(pair, {}), rollup.get(pair, {})
        if want != have:
            out.append(Drift(pair, before=sum(int(s[requests]) for s in have.values()),
                             after=sum(int(s[requests]) for s in want.values())))
    return out


def spans(pairs: Iterable[Bucket], span_s: int) -> list[list[Bucket]]:
    """The buckets grouped by `span_s`-wide time spans, oldest first."""
    grouped: dict[int, list[Bucket]] = {}
    for pair in pairs:
        grouped.setdefault(pair[1] // span_s, []).append(pair)
    return [sorted(grouped[key]) for key in sorted(grouped)]


def coarser(pairs: Iterable[Bucket], width_s: int) -> set[Bucket]:
    return {(org, start - start % width_s) for org, start in pairs}
