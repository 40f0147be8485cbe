"""Seeds billing with the demo organization, a funded wallet and the demo key (idempotent)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

DEMO_ORG = "org_demo"
DEMO_TOPUP_USD = "1000"


def _post(url: str, token: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback URL we built)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def seed_demo(billing_url: str, *, admin_token: str, api_key: str) -> None:
    """Create org_demo, top it up once (topup id makes repeats no-ops) and register the demo key's secret."""
    base = f"{billing_url}/v1/admin/organizations"
    steps = (
        (base, {"id": DEMO_ORG, "name": "Demo"}),
        (f"{base}/{DEMO_ORG}/topups", {"amount_usd": DEMO_TOPUP_USD, "topup_id": "demo-seed"}),
        (f"{base}/{DEMO_ORG}/keys", {"name": "demo", "secret": api_key}),
    )
    for url, body in steps:
        status = _post(url, admin_token, body)
        if status >= 400 and status != 409:
            raise RuntimeError(f"seeding billing failed: POST {url.removeprefix(billing_url)} answered {status}")
