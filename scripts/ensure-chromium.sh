#!/usr/bin/env bash
# Make sure Debian's headless-capable Chromium is installed for the browser tests (idempotent; installs only as root).
# The tests drive it with Playwright's own driver (PyPI wheel) via executable_path: no browser downloads.
set -euo pipefail

BINARY=/usr/bin/chromium
PACKAGES=(chromium fonts-liberation)

if [[ -x "$BINARY" ]]; then
    exit 0
fi

if [[ "$EUID" -ne 0 ]]; then
    echo "ensure-chromium: $BINARY is missing; run as root:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
    exit 1
fi

echo "ensure-chromium: installing ${PACKAGES[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null

if [[ ! -x "$BINARY" ]]; then
    echo "ensure-chromium: still missing after install: $BINARY" >&2
    exit 1
fi
echo "ensure-chromium: ready ($("$BINARY" --version 2>/dev/null || echo chromium))" >&2
