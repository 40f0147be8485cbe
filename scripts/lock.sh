#!/usr/bin/env bash
# Writes requirements/*.lock: exact versions with the hashes of every platform's files (Linux x86_64 and
# aarch64 images alike). runtime.lock is the Dockerfile's; test.lock is the venv's (runtime + the test extra,
# pinned to runtime.lock's versions); bench.lock and lint.lock are the tool venvs'. Run through `make lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-uv}"
common=(--generate-hashes --universal --python-version 3.11 --quiet)
"$UV" pip compile pyproject.toml requirements/build.in "${common[@]}" -o requirements/runtime.lock
"$UV" pip compile pyproject.toml requirements/build.in --extra test -c requirements/runtime.lock "${common[@]}" \
    -o requirements/test.lock
"$UV" pip compile requirements/bench.in "${common[@]}" -o requirements/bench.lock
"$UV" pip compile requirements/lint.in "${common[@]}" -o requirements/lint.lock
"$UV" pip compile requirements/k8s.in "${common[@]}" -o requirements/k8s.lock
