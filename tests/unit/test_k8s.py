"""deploy/k8s/, checked without a cluster.

Every overlay (and every overlay with each optional component) is built with `kubectl kustomize`,
and every object it makes is validated offline against the Kubernetes JSON schema of
KUBERNETES_VERSION, strictly (an unknown field fails), with the schemas the `kubernetes-validate`
wheel ships. Then the manifests are checked against the code and the compose stack: the modules and
commands they run, the ports of jetrl/ports.py on containers, Services and gRPC probes, the
metrics ports and Prometheus's discovery of them, every JETRL_* name a real setting, the Secrets
and ConfigMaps they reference, the 3-node NATS cluster and its routes, the replicas of the
streams, the GPUs of the GPU overlay, non-root pods.

kubectl: the machines of this project have it (/usr/bin/kubectl, with kustomize v5 built in), and
under CI (CI=true) a missing one fails these tests; elsewhere the tests that build an overlay are
skipped, saying why, and the manifest files are still validated against the schema one by one.
"""

from __future__ import annotations

import ast
import base64
import functools
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from jetrl import ports
from jetrl.bus.credentials import ensure_passwords, read_env_file, server_env
from jetrl.bus.permissions import ADMIN, SERVICE_ROLES, USERS, password_variable, render_authorization
from jetrl.config import Settings
from jetrl.localstack import nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir() if (p / "kustomization.yaml").is_file())
# every overlay alone, and with each component
VARIANTS = [(o, ()) for o in OVERLAYS] + [(o, (c,)) for o in OVERLAYS for c in COMPONENTS]
KUBERNETES_VERSION = "1.32"  # the schemas validated against: kubectl here is v1.32 (kustomize v5.5)
NAMESPACE = "jetrl"
GRPC_SERVICES = {
    "scheduler": ports.SCHEDULER,
    "rollout": ports.ROLLOUT,
    "reward": ports.REWARD,
    "trainer": ports.TRAINER,
}
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# names a jetrl container may set that are not JETRL_* settings
OTHER_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT"}

Obj = dict


# ---- building ------------------------------------------------------------------------------


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("kubectl is not on PATH: the project's machines have it (/usr/bin/kubectl), CI must run these")
    pytest.skip("kubectl is not installed: `kubectl kustomize` builds the overlays (any kubectl from 1.27 on)")


@functools.cache
def _build_cached(overlay: str, components: tuple[str, ...]) -> tuple[Obj, ...]:
    target = K8S / "overlays" / overlay
    with tempfile.TemporaryDirectory() as tmp:
        if components:
            # an overlay of the overlay, as a user's would be (kustomize wants relative paths)
            rel = os.path.relpath(K8S, tmp)
            Path(tmp, "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "resources": [f"{rel}/overlays/{overlay}"],
                        "components": [f"{rel}/components/{c}" for c in components],
                    }
                )
            )
            target = Path(tmp)
        proc = subprocess.run([_kubectl(), "kustomize", str(target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {overlay} {components}:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def _build(overlay: str, components: tuple[str, ...] = ()) -> list[Obj]:
    _kubectl()  # skip or fail before the cache
    return list(_build_cached(overlay, components))


def _variant_id(v: tuple[str, tuple[str, ...]]) -> str:
    return "+".join([v[0], *v[1]])


def _one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def _by_prefix(objs: list[Obj], kind: str, prefix: str) -> Obj:
    """The object a generator made (its name has a hash suffix)."""
    found = [o for o in objs if o["kind"] == kind and re.fullmatch(rf"{prefix}(-[a-z0-9]+)?", o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} named {prefix}*"
    return found[0]


def _workloads(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for o in objs:
        if o["kind"] in WORKLOADS:
            yield o, o["spec"]["template"]["spec"]


def _containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _ours(container: Obj) -> bool:
    return container["image"].split(":")[0] == "jetrl"


def _pod(objs: list[Obj], name: str, kind: str = "Deployment") -> Obj:
    return _one(objs, kind, name)["spec"]["template"]["spec"]


def _main(objs: list[Obj], name: str, kind: str = "Deployment") -> Obj:
    [c] = [c for c in _pod(objs, name, kind)["containers"] if c["name"] == name]
    return c


def _data(obj: Obj) -> dict[str, str]:
    """A ConfigMap's or Secret's values as text."""
    data = obj.get("data") or {}
    if obj["kind"] == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in data.items()}
    return {**data, **(obj.get("stringData") or {})}


def _env(objs: list[Obj], container: Obj) -> dict[str, str | None]:
    """The container's environment as Kubernetes makes it (None: from a field of the pod)."""
    env: dict[str, str | None] = {}
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef") or src.get("secretRef")
        env.update(_data(_one(objs, "ConfigMap" if "configMapRef" in src else "Secret", ref["name"])))
    for item in container.get("env", []):
        ref = item.get("valueFrom", {})
        if "secretKeyRef" in ref:
            env[item["name"]] = _data(_one(objs, "Secret", ref["secretKeyRef"]["name"]))[ref["secretKeyRef"]["key"]]
        else:
            env[item["name"]] = item.get("value")
    return env


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _port(addr: str) -> int:
    return ports.port_of(addr)


def _container_port(container: Obj, name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        assert any(p["containerPort"] == name_or_number for p in container.get("ports", [])), name_or_number
        return name_or_number
    [port] = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == name_or_number]
    return port


def _service_target(objs: list[Obj], service: str, port: int) -> tuple[Obj, int]:
    """The container behind `service:port` (the only one its selector picks) and its port there."""
    svc = _one(objs, "Service", service)
    [sp] = [p for p in svc["spec"]["ports"] if p["port"] == port]
    selector = svc["spec"]["selector"]
    pods = [
        pod
        for o, pod in _workloads(objs)
        if o["kind"] != "Job" and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(pods) == 1, f"Service {service} selects {len(pods)} workloads"
    target = sp.get("targetPort", sp["port"])
    for c in pods[0]["containers"]:
        if any(target in (p.get("name"), p["containerPort"]) for p in c.get("ports", [])):
            return c, _container_port(c, target)
    raise AssertionError(f"Service {service}:{port} targets {target!r}, which no container of its pods has")


# ---- building and the schema -----------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_overlay_builds_in_one_namespace(variant):
    objs = _build(*variant)
    assert len(objs) > 20
    keys = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys)), "an object is made twice"
    assert _one(objs, "Namespace", NAMESPACE)
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']} {o['metadata']['name']}"
            assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "jetrl", o["metadata"]["name"]


@pytest.fixture
def no_network(monkeypatch):
    """The schemas come from the wheel: any connection attempt during validation fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during schema validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _schema_errors(objs: list[Obj]) -> list[str]:
    errors = []
    for o in objs:
        where = f"{o.get('kind')} {o.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{where}: {e.message}")
    return errors


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_object_validates_against_the_kubernetes_schema(variant, no_network):
    objs = _build(*variant)
    assert _schema_errors(objs) == []


def _raw_manifests() -> Iterator[tuple[Path, Obj]]:
    """The resource files of the base and the components, as written (no kustomize)."""
    for folder in [K8S / "base", *(K8S / "components" / c for c in COMPONENTS)]:
        for name in yaml.safe_load((folder / "kustomization.yaml").read_text()).get("resources", []):
            for doc in yaml.safe_load_all((folder / name).read_text()):
                if doc:
                    yield folder / name, doc


def test_the_manifest_files_validate_without_kubectl(no_network):
    """What needs no kustomize: each resource file of the base and the components on its own."""
    by_file: dict[Path, list[Obj]] = {}
    for path, doc in _raw_manifests():
        by_file.setdefault(path, []).append(doc)
    assert len(by_file) >= 12
    for path, docs in by_file.items():
        assert _schema_errors(docs) == [], path.relative_to(ROOT)


def test_the_validation_catches_mistakes(no_network):
    """Strict: an unknown field, a wrong type or an unknown kind fails (the check is not a no-op)."""
    deployment = next(doc for _, doc in _raw_manifests() if doc["kind"] == "Deployment")
    assert _schema_errors([deployment]) == []
    typo = yaml.safe_load(yaml.safe_dump(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    wrong_type = yaml.safe_load(yaml.safe_dump(deployment))
    wrong_type["spec"]["replicas"] = "two"
    unknown = {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}
    assert all(len(_schema_errors([bad])) == 1 for bad in (typo, wrong_type, unknown))


def test_the_schema_package_is_pinned_and_ships_the_version():
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    [pin] = [d for d in dev if d.startswith("kubernetes-validate")]
    assert pin == f"kubernetes-validate=={version('kubernetes-validate')}"
    utils = kubernetes_validate.utils
    assert KUBERNETES_VERSION in {utils.major_minor(v) for v in utils.all_versions()}


# ---- the services -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_services_run_their_package_on_their_port_with_native_grpc_probes(overlay):
    objs = _build(overlay)
    for name, port in GRPC_SERVICES.items():
        c = _main(objs, name)
        assert _ours(c) and c["command"] == ["python", "-m", f"svc_{name}"], name
        assert _env(objs, c)["JETRL_LISTEN"] == f"0.0.0.0:{port}", name
        assert _container_port(c, "grpc") == port, name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, f"{name} {probe}"
            # the overall status ("" service), which jetrl/service.py sets with every service's own
            assert c[probe]["grpc"].get("service", "") == "", f"{name} {probe}"
        target, target_port = _service_target(objs, name, port)
        assert target is c and target_port == port, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_each_other_at_the_addresses_compose_uses(overlay):
    objs = _build(overlay)
    config = _data(_by_prefix(objs, "ConfigMap", "jetrl-config"))
    compose_env = _compose()["scheduler"]["environment"]
    for name, port in GRPC_SERVICES.items():
        key = f"JETRL_{name.upper()}_ADDR"
        assert config[key] == f"{name}:{port}" == compose_env[key], key
    nats = urlparse(config["JETRL_NATS_URL"])
    container, port = _service_target(objs, nats.hostname or "", nats.port or 0)
    assert container["name"] == "nats" and port == 4222
    assert config["JETRL_DATA_DIR"] == compose_env["JETRL_DATA_DIR"] == "/data"


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_env_name_is_a_setting_and_every_value_parses(variant):
    from svc_reward.process import ProcessOptions

    objs = _build(*variant)
    settings = {f"JETRL_{f.upper()}" for f in Settings.model_fields}
    process = {f"JETRL_PROCESS_{f.upper()}" for f in ProcessOptions.model_fields}
    checked = 0
    for o, pod in _workloads(objs):
        for c in _containers(pod):
            if not _ours(c):
                continue
            env = _env(objs, c)
            allowed = settings | OTHER_ENV | (process if c.get("command", [])[-1:] == ["svc_reward.process"] else set())
            assert set(env) <= allowed, f"{o['metadata']['name']}/{c['name']}: {sorted(set(env) - allowed)}"
            values = {k[len("JETRL_") :].lower(): v for k, v in env.items() if k in settings and v is not None}
            Settings(**values)  # a value the service would refuse fails here
            checked += 1
    assert checked >= 6


def _runnable(argv: list[str]) -> bool:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    if argv[:2] == ["python", "-m"]:
        module = ROOT / argv[2].replace(".", "/")
        return (module / "__main__.py").is_file() or (
            module.with_suffix(".py").is_file() and '__name__ == "__main__"' in module.with_suffix(".py").read_text()
        )
    return argv[0] in scripts


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_jetrl_containers_run_commands_that_exist(variant):
    objs = _build(*variant)
    for o, pod in _workloads(objs):
        for c in _containers(pod):
            if not _ours(c):
                continue
            argv = c["command"]
            if argv[:2] == ["python", "-c"]:
                _check_snippet(argv[2])
            else:
                assert _runnable(argv), f"{o['metadata']['name']}/{c['name']}: {shlex.join(argv)}"


def _check_snippet(source: str) -> None:
    """An inline `python -c` program: it compiles and what it imports exists."""
    import importlib

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_shot_jobs_as_in_compose(overlay):
    objs = _build(overlay)
    services = _compose()
    for job, compose_name in (("jetrl-migrate", "migrate"), ("jetrl-bootstrap", "bootstrap")):
        [c] = _pod(objs, job, "Job")["containers"]
        assert c["command"] == services[compose_name]["command"], job
        assert _pod(objs, job, "Job")["restartPolicy"] in ("OnFailure", "Never")
    assert _env(objs, _main(objs, "scheduler"))["JETRL_DATABASE_URL"] is not None
    # the scheduler waits for the migrate Job's schema, with the database it will use
    [wait] = _pod(objs, "scheduler")["initContainers"]
    assert "check_database" in wait["command"][2]
    assert _env(objs, wait)["JETRL_DATABASE_URL"] == _env(objs, _main(objs, "scheduler"))["JETRL_DATABASE_URL"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_data_volume_is_one_readwritemany_claim_at_the_data_dir(overlay):
    objs = _build(overlay)
    pvc = _one(objs, "PersistentVolumeClaim", "jetrl-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    data_dir = _data(_by_prefix(objs, "ConfigMap", "jetrl-config"))["JETRL_DATA_DIR"]
    assert "JETRL_DATA_DIR=/data" in (ROOT / "deploy" / "Dockerfile").read_text().replace(" ", "")
    for kind, name, container in [
        ("Deployment", "trainer", "trainer"),
        ("Deployment", "rollout", "rollout"),
        ("Deployment", "scheduler", "scheduler"),
        ("Job", "jetrl-bootstrap", "bootstrap"),
    ]:
        pod = _pod(objs, name, kind)
        [c] = [c for c in pod["containers"] if c["name"] == container]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        mounted = [claims.get(m["name"]) for m in c["volumeMounts"] if m["mountPath"] == data_dir]
        assert mounted == ["jetrl-data"], f"{name} does not mount jetrl-data at {data_dir}"
        assert _env(objs, c)["JETRL_DATA_DIR"] == data_dir


def test_single_node_data_makes_the_claim_readwriteonce():
    for overlay in OVERLAYS:
        pvc = _one(_build(overlay, ("single-node-data",)), "PersistentVolumeClaim", "jetrl-data")
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


# ---- references ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_referenced_secret_config_map_claim_and_volume_exists(variant):
    objs = _build(*variant)
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for o, pod in _workloads(objs):
        where = o["metadata"]["name"]
        templates = {t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])} | templates
        for v in pod.get("volumes", []):
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names, f"{where}: {v}"
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in names, f"{where}: {v}"
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names, f"{where}: {v}"
        for c in _containers(pod):
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{where}/{c['name']} mounts {m['name']}"
            for src in c.get("envFrom", []):
                kind, ref = (
                    ("ConfigMap", src["configMapRef"]) if "configMapRef" in src else ("Secret", src["secretRef"])
                )
                assert (kind, ref["name"]) in names, f"{where}/{c['name']}: {kind} {ref['name']}"
            for item in c.get("env", []):
                for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                    ref = item.get("valueFrom", {}).get(key)
                    if ref:
                        assert ref["key"] in _data(_one(objs, kind, ref["name"])), f"{where}/{c['name']}: {ref}"


def test_the_secrets_are_marked_placeholders_and_agree():
    objs = _build(OVERLAYS[0])
    nats, db = _data(_one(objs, "Secret", "jetrl-nats")), _data(_one(objs, "Secret", "jetrl-database"))
    assert set(nats) == {password_variable(user) for user in USERS} and set(db) == {
        "JETRL_DATABASE_URL",
        "POSTGRES_PASSWORD",
    }
    for value in (*nats.values(), db["POSTGRES_PASSWORD"], db["JETRL_DATABASE_URL"]):
        assert "CHANGE-ME" in value
    url = urlparse(db["JETRL_DATABASE_URL"])
    postgres = _env(objs, _main(objs, "postgres", "StatefulSet"))
    assert url.scheme == "postgresql+psycopg"
    assert (url.username, url.password, url.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        db["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    container, port = _service_target(objs, url.hostname or "", url.port or 0)
    assert container["name"] == "postgres" and port == 5432


def test_the_documented_overlay_of_your_own_builds(tmp_path):
    """docs/deploy.md: an overlay of your own whose secretGenerator replaces the placeholders and
    whose configMapGenerator changes a setting."""
    _kubectl()
    ensure_passwords(tmp_path / "nats.env")  # `jetrl nats secrets nats.env`, as docs/deploy.md says
    (tmp_path / "database.env").write_text(
        "JETRL_DATABASE_URL=postgresql+psycopg://jetrl:p-secret@postgres:5432/jetrl\nPOSTGRES_PASSWORD=p-secret\n"
    )
    (tmp_path / "grpc.env").write_text(
        "JETRL_GRPC_TOKEN=g-secret-0123456789\nJETRL_GRPC_REWARD_TOKEN=r-secret-0123456789\n"
    )
    rel = os.path.relpath(K8S / "overlays" / "cpu", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [rel],
                "secretGenerator": [
                    {"name": n, "namespace": NAMESPACE, "behavior": "replace", "envs": [f"{e}.env"]}
                    for n, e in (("jetrl-nats", "nats"), ("jetrl-database", "database"), ("jetrl-grpc", "grpc"))
                ],
                "configMapGenerator": [
                    {
                        "name": "jetrl-config",
                        "namespace": NAMESPACE,
                        "behavior": "merge",
                        "literals": ["JETRL_LOG_LEVEL=DEBUG"],
                    }
                ],
            }
        )
    )
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "behavior: replace" in docs and "behavior: merge" in docs
    proc = subprocess.run([_kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert _data(_one(objs, "Secret", "jetrl-nats")) == read_env_file(tmp_path / "nats.env")
    assert _data(_one(objs, "Secret", "jetrl-database"))["POSTGRES_PASSWORD"] == "p-secret"
    assert _data(_one(objs, "Secret", "jetrl-grpc")) == read_env_file(tmp_path / "grpc.env")
    assert "CHANGE-ME" not in proc.stdout
    env = _env(objs, _main(objs, "trainer"))  # the pods read the merged ConfigMap
    assert env["JETRL_LOG_LEVEL"] == "DEBUG" and env["JETRL_STREAM_REPLICAS"] == "3"


def test_external_postgres_drops_the_in_cluster_one():
    objs = _build(OVERLAYS[0], ("external-postgres",))
    assert not [o for o in objs if o["metadata"]["name"] == "postgres"]
    assert _one(objs, "Job", "jetrl-migrate")


# ---- NATS ------------------------------------------------------------------------------------


def _nats_conf(objs: list[Obj]) -> str:
    return _by_prefix(objs, "ConfigMap", "nats-config")["data"]["nats.conf"]


def _conf_value(conf: str, key: str, nested: bool = False) -> str:
    """The value of a top-level key of nats.conf, or of a key inside a block (`nested`)."""
    indent = r"\s+" if nested else ""
    [value] = re.findall(rf"^{indent}{key}:\s*(\S+)\s*$", conf, flags=re.M)
    return value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_a_3_node_jetstream_cluster_routed_through_its_headless_service(overlay):
    objs = _build(overlay)
    sts = _one(objs, "StatefulSet", "nats")
    replicas = sts["spec"]["replicas"]
    assert replicas == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = _one(objs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    conf = _nats_conf(objs)
    cluster_port = int(re.search(r"cluster \{[^}]*?\bport:\s*(\d+)", conf, flags=re.S).group(1))
    routes = re.findall(r"nats://[\w.-]+:\d+", re.search(r"routes:\s*\[(.*?)\]", conf, flags=re.S).group(1))
    assert routes == [f"nats://nats-{i}.{headless['metadata']['name']}:{cluster_port}" for i in range(replicas)]
    assert cluster_port in [p["port"] for p in headless["spec"]["ports"]]
    nats = _main(objs, "nats", "StatefulSet")
    assert _container_port(nats, "cluster") == cluster_port
    assert _container_port(nats, "client") == int(_conf_value(conf, "port")) == 4222
    assert _container_port(nats, "monitor") == int(_conf_value(conf, "http_port"))
    # each server its own name (the pod's), as JetStream clustering needs
    assert _conf_value(conf, "server_name") == "$SERVER_NAME"
    [name_env] = [e for e in nats["env"] if e["name"] == "SERVER_NAME"]
    assert name_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # its store on the pod's own volume, below the volume's size
    [template] = sts["spec"]["volumeClaimTemplates"]
    [mount] = [m for m in nats["volumeMounts"] if m["name"] == template["metadata"]["name"]]
    assert _conf_value(conf, "store_dir", nested=True) == mount["mountPath"]
    volume_size = template["spec"]["resources"]["requests"]["storage"]
    assert _gib(_conf_value(conf, "max_file_store", nested=True)) < _gib(volume_size)
    # the config the server reads is the ConfigMap's
    config_dir = str(Path(nats["command"][nats["command"].index("--config") + 1]).parent)
    [cfg] = [m for m in nats["volumeMounts"] if m["mountPath"] == config_dir]
    [vol] = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == cfg["name"]]
    assert vol["configMap"]["name"] == _by_prefix(objs, "ConfigMap", "nats-config")["metadata"]["name"]
    # a drain takes at most one server away: the other two keep every R3 stream's quorum
    pdb = _one(objs, "PodDisruptionBudget", "nats")
    assert replicas - pdb["spec"]["maxUnavailable"] >= replicas // 2 + 1


def _gib(size: str) -> float:
    number, unit = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", size).groups()
    return (
        int(number) * {"GB": 1, "G": 1, "Gi": 1, "GiB": 1, "MB": 1 / 1024, "Mi": 1 / 1024, "TB": 1024, "Ti": 1024}[unit]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_streams_have_3_replicas_on_the_3_servers(overlay):
    objs = _build(overlay)
    replicas = int(_data(_by_prefix(objs, "ConfigMap", "jetrl-config"))["JETRL_STREAM_REPLICAS"])
    assert replicas == 3 <= _one(objs, "StatefulSet", "nats")["spec"]["replicas"]
    for name in GRPC_SERVICES:  # every service declares the streams: all with the same count
        assert Settings(stream_replicas=_env(objs, _main(objs, name))["JETRL_STREAM_REPLICAS"]).stream_replicas == 3


def test_each_service_connects_as_its_role_and_the_admin_declares():
    """nats-server has every user's password and the users rendered from the topology; each service
    pod its role's user and password, the Job jetrl-nats-declare the admin's."""
    objs = _build(OVERLAYS[0])
    config = _by_prefix(objs, "ConfigMap", "nats-config")["data"]
    assert "include auth.conf" in config["nats.conf"] and config["auth.conf"] == render_authorization()
    nats = _main(objs, "nats", "StatefulSet")
    assert {"secretRef": {"name": "jetrl-nats"}} in nats["envFrom"]
    secret = _data(_one(objs, "Secret", "jetrl-nats"))
    declare = _pod(objs, "jetrl-nats-declare", "Job")["containers"][0]
    for name, user in [*((n, n) for n in GRPC_SERVICES), ("jetrl-nats-declare", ADMIN)]:
        container = declare if user == ADMIN else _main(objs, name)
        assert {"secretRef": {"name": "jetrl-nats"}} not in container.get("envFrom", []), name  # not the others'
        env = {e["name"]: e for e in container["env"]}
        assert env["JETRL_NATS_USER"]["value"] == user and user in USERS, name
        ref = env["JETRL_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "jetrl-nats", "key": password_variable(user)} and ref["key"] in secret, name
    assert declare["command"] == ["jetrl", "nats", "declare"]
    assert SERVICE_ROLES[_main(objs, "rollout")["command"][2]] == "rollout"


def test_nats_server_accepts_the_config(tmp_path):
    """`nats-server -t` (the wheel's binary) parses the cluster config with the pod's variables set."""
    conf = tmp_path / "nats.conf"
    conf.write_text((K8S / "base" / "nats" / "nats.conf").read_text())
    (tmp_path / "auth.conf").write_text((K8S / "base" / "nats" / "auth.conf").read_text())
    env = {**os.environ, "SERVER_NAME": "nats-0", **server_env(ensure_passwords(tmp_path / "passwords.env"))}
    proc = subprocess.run([nats_server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- traces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_traces_go_through_the_collector_to_jaeger(overlay):
    objs = _build(overlay)
    endpoint = urlparse(_data(_by_prefix(objs, "ConfigMap", "jetrl-config"))["OTEL_EXPORTER_OTLP_ENDPOINT"])
    collector, port = _service_target(objs, endpoint.hostname or "", endpoint.port or 0)
    assert collector["name"] == "otel-collector" and endpoint.scheme == "http"
    config = yaml.safe_load(_by_prefix(objs, "ConfigMap", "otel-collector-config")["data"]["config.yaml"])
    assert _port(config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == port
    [pipeline] = config["service"]["pipelines"].values()
    [exporter] = pipeline["exporters"]
    assert pipeline["receivers"] == ["otlp"] and set(pipeline["processors"]) <= set(config["processors"])
    host, jaeger_port = config["exporters"][exporter]["endpoint"].rsplit(":", 1)
    jaeger, target = _service_target(objs, host, int(jaeger_port))
    assert jaeger["image"] == _compose()["jaeger"]["image"] and target == 4317
    assert _container_port(jaeger, "ui") == 16686
    for name in GRPC_SERVICES:
        assert _env(objs, _main(objs, name))["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint.geturl()


# ---- metrics ---------------------------------------------------------------------------------


def _prometheus_job(objs: list[Obj]) -> Obj:
    config = yaml.safe_load(_by_prefix(objs, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    [job] = config["scrape_configs"]
    return job


def _meta_name(name: str) -> str:
    """A pod label's or annotation's name in Prometheus's discovered labels."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _scraped(objs: list[Obj], job: Obj) -> dict[tuple[str, int], str]:
    """(workload, port) -> job label of every container port Prometheus's pod discovery finds in
    these pods and its relabelling keeps (its regexes are anchored, source labels joined by ;)."""
    rules = job["relabel_configs"]
    scraped = {}
    for o, pod in _workloads(objs):
        meta = o["spec"]["template"]["metadata"]
        pod_labels = {
            **{f"__meta_kubernetes_pod_label_{_meta_name(k)}": v for k, v in meta.get("labels", {}).items()},
            **{f"__meta_kubernetes_pod_annotation_{_meta_name(k)}": v for k, v in meta.get("annotations", {}).items()},
        }
        for c in _containers(pod):
            for port in c.get("ports", []):
                labels = {**pod_labels, "__meta_kubernetes_pod_container_port_name": port.get("name", "")}
                kept = True
                for rule in rules:
                    value = ";".join(labels.get(name, "") for name in rule["source_labels"])
                    if rule.get("action") == "keep":
                        kept &= re.fullmatch(rule["regex"], value) is not None
                    else:  # replace, the default: the whole value
                        labels[rule["target_label"]] = value
                if kept:
                    scraped[(o["metadata"]["name"], port["containerPort"])] = labels["job"]
    return scraped


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_serves_metrics_on_its_port_of_jetrl_ports(overlay):
    objs = _build(overlay)
    assert set(ports.METRICS) == set(GRPC_SERVICES)
    for name, port in ports.METRICS.items():
        c = _main(objs, name)
        assert _env(objs, c)["JETRL_METRICS_PORT"] == str(port), name
        assert _container_port(c, "metrics") == port, name
        # bound beside the gRPC server (jetrl/service.py): on every interface, where Prometheus reaches it
        assert _env(objs, c)["JETRL_LISTEN"].startswith("0.0.0.0:"), name


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_prometheus_scrapes_exactly_the_services_metrics_ports(variant):
    """Prometheus's pod discovery, relabelled as its config says, keeps each service's `metrics`
    port and nothing else (no gRPC port, no other pod), under the job names of compose's Prometheus."""
    objs = _build(*variant)
    job = _prometheus_job(objs)
    [sd] = job["kubernetes_sd_configs"]
    assert sd == {"role": "pod", "namespaces": {"own_namespace": True}}
    compose_jobs = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert _scraped(objs, job) == {(name, port): name for name, port in ports.METRICS.items()}
    assert {j["job_name"] for j in compose_jobs} == set(ports.METRICS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_runs_as_in_compose_and_may_list_the_namespaces_pods(overlay):
    objs = _build(overlay)
    compose = _compose()["prometheus"]
    c = _main(objs, "prometheus")
    assert c["image"] == compose["image"]
    # its config is the ConfigMap's, its retention compose's
    config_file = next(a.split("=", 1)[1] for a in c["args"] if a.startswith("--config.file="))
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == str(Path(config_file).parent)]
    pod = _pod(objs, "prometheus")
    [vol] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert vol["configMap"]["name"] == _by_prefix(objs, "ConfigMap", "prometheus-config")["metadata"]["name"]
    assert Path(config_file).name == "prometheus.yml"
    retention = [a for a in c["args"] if a.startswith("--storage.tsdb.retention.time=")]
    assert retention == [a for a in compose["command"] if a.startswith("--storage.tsdb.retention.time=")]
    target, port = _service_target(objs, "prometheus", 9090)
    assert target is c and port == 9090
    # its ServiceAccount is bound to a Role of this namespace that lists and watches pods
    account = pod["serviceAccountName"]
    assert _one(objs, "ServiceAccount", account)
    [binding] = [
        b
        for b in objs
        if b["kind"] == "RoleBinding"
        and {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in b["subjects"]
    ]
    assert binding["roleRef"]["kind"] == "Role"
    role = _one(objs, "Role", binding["roleRef"]["name"])
    assert any(
        "" in r["apiGroups"] and "pods" in r["resources"] and {"list", "watch"} <= set(r["verbs"])
        for r in role["rules"]
    )


# ---- images, resources, GPUs, security -------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_those_of_compose(overlay):
    objs = _build(overlay)
    services = _compose()
    for name in ("nats", "postgres"):
        assert _main(objs, name, "StatefulSet")["image"] == services[name]["image"]
    assert _main(objs, "jaeger")["image"] == services["jaeger"]["image"]
    ours = {c["image"] for _, pod in _workloads(objs) for c in _containers(pod) if _ours(c)}
    assert ours <= {services["scheduler"]["image"], services["rollout-gpu"]["image"]}


def test_the_gpu_overlay_puts_rollout_and_trainer_on_gpus_with_the_cuda_image():
    compose = _compose()["rollout-gpu"]
    objs = _build("gpu")
    for name in ("rollout", "trainer"):
        c = _main(objs, name)
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1, name
        assert c["image"] == compose["image"], name
        pod = _pod(objs, name)
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), name
    concurrency = _env(objs, _main(objs, "rollout"))["JETRL_ROLLOUT_CONCURRENCY"]
    assert concurrency == compose["environment"]["JETRL_ROLLOUT_CONCURRENCY"].split(":-")[-1].rstrip("}")
    assert int(concurrency) > Settings.model_fields["rollout_concurrency"].default


def test_the_cpu_overlay_asks_for_no_gpu():
    for _, pod in _workloads(_build("cpu")):
        for c in _containers(pod):
            assert not any("gpu" in k for k in c.get("resources", {}).get("limits", {})), c["name"]


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_container_has_requests_and_a_memory_limit(variant):
    objs = _build(*variant)
    for o, pod in _workloads(objs):
        for c in _containers(pod):
            res = c.get("resources", {})
            where = f"{o['metadata']['name']}/{c['name']}"
            assert {"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}), where
    for name in ("rollout", "trainer"):  # torch's threads fit the CPUs the pod may use
        c = _main(objs, name)
        threads = int(_env(objs, c)["JETRL_TORCH_THREADS"] or 0)
        assert 0 < threads <= float(c["resources"]["limits"]["cpu"]), name


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_pod_runs_as_non_root(variant):
    for o, pod in _workloads(_build(*variant)):
        pod_sc = pod.get("securityContext", {})
        for c in _containers(pod):
            sc = {**pod_sc, **c.get("securityContext", {})}
            where = f"{o['metadata']['name']}/{c['name']}"
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, where
            assert c.get("securityContext", {}).get("allowPrivilegeEscalation") is False, where
    # the images' own user (deploy/Dockerfile, Dockerfile.cuda) is the one the jetrl pods name
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        assert "--uid 10001" in (ROOT / "deploy" / dockerfile).read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_workers_scale_and_the_singletons_do_not(overlay):
    objs = _build(overlay)
    assert _one(objs, "Deployment", "rollout")["spec"]["replicas"] >= 1
    for name in ("scheduler", "trainer"):
        d = _one(objs, "Deployment", name)
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate", name


# ---- the optional reward servers ------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reward_servers_listen_on_their_ports_under_their_compose_names(overlay):
    objs = _build(overlay, ("rewards",))
    compose = {s["command"][2]: name for name, s in _compose().items() if s.get("command", [])[:2] == ["python", "-m"]}
    for module, port in ports.REWARD_SERVERS.items():
        name = compose[module]
        c = _main(objs, name)
        assert c["command"] == ["python", "-m", module] and _ours(c), name
        assert _env(objs, c)["JETRL_LISTEN"] == f"0.0.0.0:{port}", name
        assert all(c[p]["grpc"]["port"] == port for p in ("startupProbe", "readinessProbe", "livenessProbe")), name
        target, target_port = _service_target(objs, name, port)
        assert target is c and target_port == port, name
    assert not [o for o in _build(overlay) if o["metadata"]["name"].startswith("reward-")]


# ---- docs ------------------------------------------------------------------------------------


def test_the_docs_name_every_overlay_and_component():
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for overlay in OVERLAYS:
        assert f"kubectl apply -k deploy/k8s/overlays/{overlay}" in docs, overlay
    for component in COMPONENTS:
        assert f"components/{component}" in docs, component
    assert "kubectl -n jetrl scale deployment/rollout" in docs


def test_the_k8s_nats_config_runs_on_loopback_on_any_free_ports(tmp_path):
    """tests/loopback_nats_cluster.py rewrites the StatefulSet's config for three local servers;
    a free port that merely contains 4222 or 6222 (42225, 56222) is not one left behind."""
    from loopback_nats_cluster import K8S_NATS_CONF, loopback_conf

    ports = [(45107, 47347, 40787), (44905, 56222, 49003), (42225, 55245, 52781)]
    conf = loopback_conf(K8S_NATS_CONF.read_text(), 2, ports, tmp_path)
    assert "port: 42225" in conf and "nats://127.0.0.1:56222" in conf and '"127.0.0.1:52781"' in conf
