#!/usr/bin/env bash
# Make sure the Ceph binaries the S3 test server needs are installed (idempotent; installs only as root).
set -euo pipefail

BINARIES=(ceph-mon ceph-osd radosgw monmaptool radosgw-admin ceph)
PACKAGES=(radosgw ceph-mon ceph-osd)

missing() {
    local name
    for name in "${BINARIES[@]}"; do
        command -v "$name" >/dev/null 2>&1 || printf '%s ' "$name"
    done
}

absent="$(missing)"
if [[ -z "$absent" ]]; then
    exit 0
fi

if [[ "$EUID" -ne 0 ]]; then
    echo "ensure-ceph: missing ${absent% }; run as root:" >&2
    echo "  apt-get update && apt-get install -y ${PACKAGES[*]}" >&2
    exit 1
fi

echo "ensure-ceph: installing ${PACKAGES[*]} (missing: ${absent% })" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${PACKAGES[@]}" >/dev/null

absent="$(missing)"
if [[ -n "$absent" ]]; then
    echo "ensure-ceph: still missing after install: ${absent% }" >&2
    exit 1
fi
echo "ensure-ceph: ready" >&2
