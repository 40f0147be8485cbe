"""Render a kustomization offline: the subset of kustomize v5 that deploy/k8s uses, and nothing more.

    python scripts/render-k8s.py deploy/k8s/overlays/dev > dev.yaml

It exists so that CI can render and validate the manifests with nothing but PyPI packages (no kustomize
binary is published there). Supported: `resources` (files and directories), `components`, `namespace`,
`labels` (metadata only), `images`, `replicas`, `patches` (strategic merge, from `path` or inline
`patch`, `$patch: delete`), `configMapGenerator` / `secretGenerator` (`files`, `literals`, `behavior`,
`options.disableNameSuffixHash`), kustomize's content-hash name suffixes and the name references that
follow them. Anything else is refused with an error naming it, so the renderer never quietly renders
something kustomize would render differently; tests/integration/test_k8s_manifests.py also compares
its output with `kubectl kustomize` whenever one is on PATH.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_FIELDS = frozenset({
    "apiVersion", "kind", "namespace", "labels", "resources", "components", "images", "replicas",
    "configMapGenerator", "secretGenerator", "patches",
})
GENERATOR_FIELDS = frozenset({"name", "namespace", "behavior", "files", "literals", "options", "type"})
# Kinds whose cross-references the renderer knows; another kind needs the renderer extended first.
NAMESPACED_KINDS = frozenset({
    "ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet", "Job",
    "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
})
CLUSTER_KINDS = frozenset({"Namespace"})
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "Job"})
SCALABLE_KINDS = frozenset({"Deployment", "StatefulSet"})
# Strategic-merge keys of the lists the overlays patch (the Kubernetes API's patchMergeKey); any other
# list is replaced as a whole, as kustomize does for lists without a merge strategy.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "imagePullSecrets": "name", "topologySpreadConstraints": "topologyKey"}
# kustomize's legacy output order (kyaml resid/gvk.go): these kinds first, in this order, then the rest.
ORDER_FIRST = ("Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
               "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
               "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
               "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget")
ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


class RenderError(Exception):
    """The kustomization uses something this renderer does not support, or is wrong; the message says where."""


@dataclass
class Resource:
    obj: Obj
    hashed: bool = False  # a generated ConfigMap/Secret whose name gets kustomize's content-hash suffix

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", ""))


def render(directory: Path) -> list[Obj]:
    """The objects `kustomize build directory` prints, in kustomize's (legacy) order."""
    resources = _build(directory.resolve())
    _apply_hash_suffixes(resources)
    return [res.obj for res in sorted(resources, key=_order_key)]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (files in ConfigMaps) as literal blocks, as kustomize prints them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


def dump(objects: list[Obj]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=120,
                         allow_unicode=True)


# ----------------------------------------------------------------------------------------- kustomization


def _load_kustomization(directory: Path) -> tuple[Path, Obj]:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            unknown = sorted(set(data) - KUSTOMIZATION_FIELDS)
            if unknown:
                raise RenderError(f"{path}: unsupported field(s) {unknown}; extend scripts/render-k8s.py first")
            return path, data
    raise RenderError(f"{directory}: no kustomization.yaml")


def _build(directory: Path) -> list[Resource]:
    path, kustomization = _load_kustomization(directory)
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{path}: a {kustomization['kind']} cannot be built on its own")
    return _accumulate(directory, path, kustomization, [])


def _accumulate(directory: Path, path: Path, kustomization: Obj, resources: list[Resource]) -> list[Resource]:
    """kustomize's order: resources, components, generators, then the transformers."""
    for entry in kustomization.get("resources", []):
        target = directory / entry
        if target.is_dir():
            resources.extend(_build(target.resolve()))
        else:
            resources.extend(Resource(obj) for obj in _load_documents(_inside(directory, target, path)))
    for entry in kustomization.get("components", []):
        component_dir = (directory / entry).resolve()
        component_path, component = _load_kustomization(component_dir)
        if component.get("kind") != "Component":
            raise RenderError(f"{path}: {entry} is listed in components but is not a Component")
        resources = _accumulate(component_dir, component_path, component, resources)
    for generator in kustomization.get("configMapGenerator", []):
        resources = _generate(directory, path, generator, "ConfigMap", resources)
    for generator in kustomization.get("secretGenerator", []):
        resources = _generate(directory, path, generator, "Secret", resources)
    for patch in kustomization.get("patches", []):
        resources = _patch(directory, path, patch, resources)
    if "namespace" in kustomization:
        _set_namespace(resources, kustomization["namespace"])
    for entry in kustomization.get("labels", []):
        _add_labels(path, resources, entry)
    for entry in kustomization.get("replicas", []):
        _set_replicas(path, resources, entry)
    for entry in kustomization.get("images", []):
        _set_image(resources, entry)
    for res in resources:
        if res.kind not in NAMESPACED_KINDS | CLUSTER_KINDS:
            raise RenderError(f"{path}: kind {res.kind} is not supported by scripts/render-k8s.py")
    return resources


def _inside(directory: Path, target: Path, path: Path) -> Path:
    """kustomize's default load restriction: files come from the kustomization's directory or below."""
    resolved = target.resolve()
    if not resolved.is_relative_to(directory):
        raise RenderError(f"{path}: {target} is outside {directory} (kustomize refuses to load it)")
    if not resolved.is_file():
        raise RenderError(f"{path}: {target} does not exist")
    return resolved


def _load_documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


# ------------------------------------------------------------------------------------------- generators


def _generate(directory: Path, path: Path, generator: Obj, kind: str, resources: list[Resource]) -> list[Resource]:
    unknown = sorted(set(generator) - GENERATOR_FIELDS)
    options = generator.get("options") or {}
    if unknown or set(options) - {"disableNameSuffixHash"} or (kind == "ConfigMap" and "type" in generator):
        raise RenderError(f"{path}: generator {generator.get('name')!r} uses unsupported fields")
    data: dict[str, str] = {}
    for literal in generator.get("literals", []):
        key, sep, value = str(literal).partition("=")
        if not sep or not key:
            raise RenderError(f"{path}: literal {literal!r} must look like KEY=VALUE")
        data[key] = _unquote(value)
    for entry in generator.get("files", []):
        key, sep, file_name = str(entry).partition("=")
        if not sep:
            key, file_name = Path(entry).name, entry
        data[key] = _inside(directory, directory / file_name, path).read_text(encoding="utf-8")
    metadata: Obj = {"name": generator["name"]}
    if generator.get("namespace"):
        metadata["namespace"] = generator["namespace"]
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": metadata}
    if kind == "Secret":
        obj["type"] = generator.get("type", "Opaque")
        obj["data"] = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    else:
        obj["data"] = data
    new = Resource(obj, hashed=not options.get("disableNameSuffixHash", False))
    behavior = generator.get("behavior", "create")
    matches = [res for res in resources if res.kind == kind and res.name == generator["name"]
               and (not generator.get("namespace") or res.namespace == generator["namespace"])]
    if behavior == "create":
        if matches:
            raise RenderError(f"{path}: {kind} {generator['name']!r} already exists; use behavior: merge or replace")
        return [*resources, new]
    if behavior not in ("merge", "replace") or len(matches) != 1:
        raise RenderError(f"{path}: behavior {behavior!r} needs exactly one existing {kind} {generator['name']!r}")
    old = matches[0]
    for field in ("labels", "annotations"):
        merged = {**old.obj["metadata"].get(field, {}), **metadata.get(field, {})}
        if merged:
            metadata[field] = merged
    if old.namespace:
        metadata["namespace"] = old.namespace
    if behavior == "merge":
        obj["data"] = {**old.obj.get("data", {}), **obj["data"]}
    if "options" not in generator:
        new.hashed = old.hashed
    return [new if res is old else res for res in resources]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


# ---------------------------------------------------------------------------------------------- patches


def _patch(directory: Path, path: Path, entry: Obj, resources: list[Resource]) -> list[Resource]:
    if set(entry) - {"path", "patch"} or len(entry) != 1:
        raise RenderError(f"{path}: patches entries need exactly one of path/patch (no target, no options)")
    if "path" in entry:
        documents = _load_documents(_inside(directory, directory / entry["path"], path))
    else:
        documents = [doc for doc in yaml.safe_load_all(entry["patch"]) if doc]
    for document in documents:
        if "op" in document or isinstance(document, list):
            raise RenderError(f"{path}: JSON 6902 patches are not supported")
        meta = document.get("metadata", {})
        matches = [res for res in resources if res.kind == document.get("kind") and res.name == meta.get("name")
                   and (not meta.get("namespace") or res.namespace == meta["namespace"])]
        if len(matches) != 1:
            raise RenderError(f"{path}: patch for {document.get('kind')} {meta.get('name')!r} matches "
                              f"{len(matches)} resources, not one")
        target = matches[0]
        if document.get("$patch") == "delete":
            resources = [res for res in resources if res is not target]
            continue
        body = {key: value for key, value in document.items() if key not in ("apiVersion", "kind")}
        target.obj = _merge(target.obj, body)
    return resources


def _merge(base: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge of `patch` onto `base` (a copy is returned)."""
    if isinstance(patch, dict) and isinstance(base, dict):
        directive = patch.get("$patch")
        if directive == "replace":
            return {key: value for key, value in patch.items() if key != "$patch"}
        if directive is not None:
            raise RenderError(f"unsupported $patch: {directive} under {field!r}")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value, key)
            else:
                merged[key] = _strip_directives(value)
        return merged
    if isinstance(patch, list) and isinstance(base, list) and field in MERGE_KEYS:
        # kustomize (kyaml merge2) puts the patch's elements first, in the patch's order, then the
        # elements the patch does not mention. Order matters for env: $(VAR) only sees earlier entries.
        key = MERGE_KEYS[field]
        by_key = {item.get(key): item for item in base}
        mentioned = {item.get(key) for item in patch}
        merged_list = []
        for item in patch:
            if item.get("$patch") == "delete":
                continue
            old = by_key.get(item.get(key))
            merged_list.append(_strip_directives(item) if old is None else _merge(old, item, field))
        merged_list.extend(copy.deepcopy(item) for item in base if item.get(key) not in mentioned)
        return merged_list
    return _strip_directives(patch)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strip_directives(item) for key, item in value.items() if key != "$patch"}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return value


# --------------------------------------------------------------------------------------------- transformers


def _set_namespace(resources: list[Resource], namespace: str) -> None:
    for res in resources:
        if res.kind == "Namespace":
            res.obj["metadata"]["name"] = namespace  # kustomize renames the Namespace object itself
        elif res.kind not in CLUSTER_KINDS:
            res.obj["metadata"]["namespace"] = namespace


def _add_labels(path: Path, resources: list[Resource], entry: Obj) -> None:
    if set(entry) - {"pairs", "includeSelectors", "includeTemplates"} or entry.get("includeSelectors") \
            or entry.get("includeTemplates"):
        raise RenderError(f"{path}: labels supports only `pairs` (metadata labels)")
    for res in resources:
        res.obj["metadata"].setdefault("labels", {}).update(entry["pairs"])


def _set_replicas(path: Path, resources: list[Resource], entry: Obj) -> None:
    matches = [res for res in resources if res.kind in SCALABLE_KINDS and res.name == entry["name"]]
    if not matches:
        raise RenderError(f"{path}: replicas: nothing named {entry['name']!r} to scale")
    for res in matches:
        res.obj["spec"]["replicas"] = entry["count"]


def _set_image(resources: list[Resource], entry: Obj) -> None:
    for res in resources:
        for container in containers(res.obj):
            name, tag, digest = _split_image(container["image"])
            if name != entry["name"]:
                continue
            name = entry.get("newName", name)
            if "digest" in entry:
                tag, digest = "", entry["digest"]
            elif "newTag" in entry:
                tag, digest = str(entry["newTag"]), ""
            container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _split_image(image: str) -> tuple[str, str, str]:
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1:], digest
    return rest, "", digest


def pod_specs(obj: Obj) -> Iterator[Obj]:
    """The pod spec of a workload (Deployment, StatefulSet, Job), if it has one."""
    if obj.get("kind") in WORKLOAD_KINDS:
        yield obj["spec"]["template"]["spec"]


def containers(obj: Obj) -> Iterator[Obj]:
    """Every container (init containers first) of a workload."""
    for spec in pod_specs(obj):
        yield from spec.get("initContainers", [])
        yield from spec.get("containers", [])


# ----------------------------------------------------------------------------------- hashes and references


def _apply_hash_suffixes(resources: list[Resource]) -> None:
    renamed: dict[tuple[str, str, str], str] = {}
    for res in resources:
        if res.hashed:
            new_name = f"{res.name}-{content_hash(res.obj)}"
            renamed[(res.kind, res.namespace, res.name)] = new_name
            res.obj["metadata"]["name"] = new_name
    for res in resources:
        for kind, holder, field in references(res.obj):
            replacement = renamed.get((kind, res.namespace, str(holder.get(field))))
            if replacement is not None:
                holder[field] = replacement


def references(obj: Obj) -> Iterator[tuple[str, Obj, str]]:
    """(kind referred to, the dict holding the name, the field) for every ConfigMap/Secret reference."""
    for spec in pod_specs(obj):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                yield "ConfigMap", volume["configMap"], "name"
            if "secret" in volume:
                yield "Secret", volume["secret"], "secretName"
            for source in volume.get("projected", {}).get("sources", []):
                if "configMap" in source:
                    yield "ConfigMap", source["configMap"], "name"
                if "secret" in source:
                    yield "Secret", source["secret"], "name"
        for pull in spec.get("imagePullSecrets", []):
            yield "Secret", pull, "name"
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
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


_HASH_LETTERS = str.maketrans("013ae", "ghkmt")  # the substitution kustomize applies to its hex digest


def content_hash(obj: Obj) -> str:
    """kustomize's name suffix for a generated ConfigMap/Secret (api/hasher: sha256 of a JSON encoding)."""
    # kustomize 5 hashes an empty name (seen with v5.5.0; the tests pin it with its real outputs), so the
    # suffix depends on the kind, the type and the data only.
    encoded: Obj = {"kind": obj["kind"], "name": "", "data": obj.get("data", {})}
    if obj["kind"] == "Secret":
        encoded["type"] = obj.get("type", "Opaque")
    digest = hashlib.sha256(_go_json(encoded).encode()).hexdigest()
    return digest[:10].translate(_HASH_LETTERS)


def _go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes it: sorted keys, no spaces, <, >, & and control characters escaped."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_go_string(key)}:{_go_json(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_go_json(item) for item in value) + "]"
    if isinstance(value, str):
        return _go_string(value)
    return json.dumps(value)


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _go_string(text: str) -> str:
    out = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char < " " or char in "<>&\u2028\u2029":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _order_key(res: Resource) -> tuple[int, str, str, str]:
    kind = res.kind
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind) - len(ORDER_FIRST)
    elif kind in ORDER_LAST:
        rank = ORDER_LAST.index(kind) + 1
    else:
        rank = 0
    group, _, version = str(res.obj["apiVersion"]).rpartition("/")
    return rank, f"{group or '~G'}_{version}_{kind}", res.namespace, res.name


def main(argv: list[str], write: Callable[[str], object] = sys.stdout.write) -> int:
    if len(argv) != 1:
        print("usage: python scripts/render-k8s.py <directory with a kustomization.yaml>", file=sys.stderr)
        return 2
    try:
        write(dump(render(Path(argv[0]))))
    except RenderError as exc:
        print(f"render-k8s: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
