# syntax=docker/dockerfile:1
# One image for every Routeur service. The first argument (or ROUTEUR_SERVICE) picks the service:
#   docker build -t routeur:dev .
#   docker run --rm -p 8080:8080 -e PROXY_HOST=0.0.0.0 … routeur:dev proxy
# Kubernetes runs it with `args: ["<service>"]` (deploy/k8s), as uid 10001 with a read-only root.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/routeur
WORKDIR /src
# Exactly the runtime lock (hash-checked, no resolver), then Routeur itself without dependencies; the build
# backend is in the lock too, so nothing unlocked is fetched. Tests, bench and deploy stay out of the image.
COPY requirements/runtime.lock ./requirements/runtime.lock
RUN /opt/routeur/bin/pip install --require-hashes --no-deps -r requirements/runtime.lock
COPY pyproject.toml ./
COPY proto ./proto
COPY services ./services
COPY catalog ./catalog
COPY launcher ./launcher
RUN /opt/routeur/bin/pip install --no-deps --no-build-isolation .

FROM python:3.11-slim
ENV PATH=/opt/routeur/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROUTEUR_SERVICE=proxy
RUN groupadd --system --gid 10001 routeur \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin routeur
COPY --from=build /opt/routeur /opt/routeur
WORKDIR /opt/routeur
USER 10001:10001
# Ports by service: proxy 8080, router 8081, billing 8082, tracer 8083, archiver 8084, emulator 8090.
EXPOSE 8080
# `exec` makes Python PID 1, so SIGTERM reaches the service's graceful drain directly.
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"services.${1:-$ROUTEUR_SERVICE}\"", "routeur"]
CMD []
