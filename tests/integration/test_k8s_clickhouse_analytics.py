"""deploy/k8s gives the tracer's `/v1/sql` its own ClickHouse identity (issue 18): a users.d file with a read-only
profile whose limits are the tracer's own defaults, an hourly quota and SELECT grants on the analytics tables only,
mounted into the in-cluster server, and a CLICKHOUSE_ANALYTICS_URL on the tracer that names that user."""

from __future__ import annotations

import os
import re
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
import yaml

from services.tracer.limits import Limits, session_settings
from tests.integration.test_k8s_manifests import (
    DEV,
    EXTERNAL,
    K8S,
    PROD,
    Obj,
    containers,
    data_of,
    env_value,
    kustomize,
    named,
    named_prefix,
)

USER = "routeur_analytics"
# What the analytics user may read: the public analytics interface (README, Analytics SQL) and its own settings.
GRANTS = {"GRANT SELECT ON routeur.traces", "GRANT SELECT ON routeur.usage_minute",
          "GRANT SELECT ON routeur.usage_hour", "GRANT SELECT ON routeur.usage_day",
          "GRANT SHOW TABLES, SHOW COLUMNS ON routeur.*", "GRANT SELECT ON system.settings"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """dev, prod, and prod with managed ClickHouse/S3 (as test_k8s_manifests renders them)."""
    external = tmp_path_factory.mktemp("prod-external-analytics")
    (external / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "prod", external)],
        "components": [os.path.relpath(K8S / "components" / "external-datastores", external)]}))
    dirs = {DEV: K8S / "overlays" / "dev", PROD: K8S / "overlays" / "prod", EXTERNAL: external}
    return {name: kustomize(path) for name, path in dirs.items()}


def _config(objects: list[Obj]) -> dict[str, ET.Element]:
    data = data_of(objects, "ConfigMap", named_prefix(objects, "ConfigMap", "clickhouse-config"))
    return {name: ET.fromstring(text) for name, text in data.items()}  # noqa: S314 (our own file, from the repo)


@pytest.mark.parametrize("variant", [DEV, PROD])
def test_the_in_cluster_clickhouse_has_the_read_only_analytics_user(variant: str,
                                                                    rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[variant]
    config = _config(objects)
    users = config["clickhouse-analytics-user.xml"]
    profile = users.find(f"profiles/{USER}")
    assert profile is not None
    settings = [(child.tag, (child.text or "").strip()) for child in profile]
    assert settings[-1] == ("readonly", "1")  # after it nothing in a session can change a setting
    # the profile's limits are the tracer's defaults (TRACER_SQL_*), whatever the tracer would set on chdb
    expected = {name: str(value) for name, value in session_settings(Limits(), readonly=True).items()}
    expected["max_execution_time"] = str(int(Limits().max_execution_s))
    assert {name: value for name, value in settings if name in expected} == expected
    assert dict(settings)["allow_ddl"] == "0"
    user = users.find(f"users/{USER}")
    assert user is not None
    assert user.findtext("profile") == USER and user.findtext("quota") == USER
    assert users.find(f"quotas/{USER}/interval/duration") is not None
    password = user.find("password")
    assert password is not None and password.get("from_env") == "CLICKHOUSE_ANALYTICS_PASSWORD" and not password.text
    grants = {" ".join((query.text or "").split()) for query in user.findall("grants/query")}
    assert grants == GRANTS
    assert not any(re.search(r"\b(ALL|INSERT|ALTER|CREATE|DROP|FILE|URL|S3|REMOTE|SOURCES|KILL|SYSTEM)\b|\*\.\*", g)
                   for g in grants), grants
    assert user.findtext("access_management") == "0"
    access = config["clickhouse-access.xml"]
    assert access.findtext("access_control_improvements/select_from_system_db_requires_grant") == "true"
    # mounted where the server reads them, with the password from its own Secret
    server = named(objects, "StatefulSet", "clickhouse")
    (container,) = containers(server)
    mounts = {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"]}
    assert mounts["/etc/clickhouse-server/users.d/routeur-analytics.xml"] == "clickhouse-analytics-user.xml"
    assert mounts["/etc/clickhouse-server/config.d/routeur-access.xml"] == "clickhouse-access.xml"
    (password_env,) = [e for e in container["env"] if e["name"] == "CLICKHOUSE_ANALYTICS_PASSWORD"]
    secret = password_env["valueFrom"]["secretKeyRef"]["name"]
    assert secret == named_prefix(objects, "Secret", "routeur-clickhouse-analytics")


@pytest.mark.parametrize("variant", [DEV, PROD, EXTERNAL])
def test_the_tracer_runs_sql_as_the_analytics_user_and_ingests_as_another(variant: str,
                                                                          rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[variant]
    tracer = named(objects, "Deployment", "tracer")
    (container,) = [c for c in containers(tracer) if c["name"] == "tracer"]
    analytics = urllib.parse.urlsplit(env_value(container, "CLICKHOUSE_ANALYTICS_URL"))
    ingest = urllib.parse.urlsplit(env_value(container, "CLICKHOUSE_URL"))
    assert analytics.username == USER and ingest.username != USER
    assert analytics.password == "$(CLICKHOUSE_ANALYTICS_PASSWORD)"
    assert (analytics.hostname, analytics.port, analytics.path) == (ingest.hostname, ingest.port, ingest.path)
    sources = {ref["secretRef"]["name"] for ref in container.get("envFrom", []) if "secretRef" in ref}
    assert named_prefix(objects, "Secret", "routeur-clickhouse-analytics") in sources


def test_the_users_file_is_in_the_repository() -> None:
    assert (K8S / "base" / "config" / "clickhouse-analytics-user.xml").is_file()
