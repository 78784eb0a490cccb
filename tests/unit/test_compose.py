"""docker-compose.yml and deploy/Dockerfile, checked without a Docker engine.

The compose file is validated against the vendored Compose Specification schema
(tests/data/compose-spec.json, see tests/data/README.md), then for consistency with the repo:
the modules and commands it runs exist, dependencies wait on real conditions, health probes hit
the ports the services listen on, traces go to Jaeger, and the data volume is shared.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from jetrl import ports
from jetrl.metrics import SERIES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"

# The gRPC services and the port each listens on by default (jetrl/ports.py).
GRPC_SERVICES = {
    "scheduler": ports.SCHEDULER,
    "rollout": ports.ROLLOUT,
    "reward": ports.REWARD,
    "trainer": ports.TRAINER,
}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# ---- helpers -------------------------------------------------------------------------------


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # safe_load resolves the `<<:` merge keys


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _argv(value) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _uses_our_image(svc: dict) -> bool:
    build = svc.get("build")
    if isinstance(build, str):
        return (ROOT / build / "Dockerfile").resolve() == DOCKERFILE
    if isinstance(build, dict):
        return (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    return False


def _one_shot(svc: dict) -> bool:
    return str(svc.get("restart", "no")) == "no"


def _healthcheck_argv(svc: dict) -> list[str]:
    test = _argv(svc["healthcheck"]["test"])
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    return test[1:] if test[0] == "CMD" else test


def _mounts(svc: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry; source is '' for an anonymous volume."""
    out = []
    for m in svc.get("volumes") or []:
        if isinstance(m, dict):
            out.append((str(m.get("source", "")), str(m["target"])))
        else:
            parts = str(m).split(":")
            out.append(("", parts[0]) if len(parts) == 1 else (parts[0], parts[1]))
    return out


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _copy_sources() -> list[str]:
    sources = []
    for instr, args in _dockerfile_instructions():
        if instr not in ("COPY", "ADD"):
            continue
        if args.startswith("["):
            words = json.loads(args)
        else:
            words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue  # from another stage or image, not from the build context
        words = [w for w in words if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


def _dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    pats = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("!"):
            pats.append(line.strip("/"))
    return pats


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        for p in prefixes:
            if fnmatch.fnmatch(p, pat) or (pat.startswith("**/") and fnmatch.fnmatch(Path(p).name, pat[3:])):
                return True
    return False


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# ---- the compose file ----------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_knows_service_completed_successfully():
    """The vendored schema is recent enough for the one-shot dependencies used here."""
    schema = json.loads(SCHEMA.read_text())
    dep = schema["definitions"]["service"]["properties"]["depends_on"]["oneOf"][1]
    cond = next(iter(dep["patternProperties"].values()))["properties"]["condition"]
    assert "service_completed_successfully" in cond["enum"]


def test_stack_has_the_expected_services():
    services = _services()
    for name in ["nats", "postgres", "jaeger", "migrate", "bootstrap", *GRPC_SERVICES]:
        assert name in services, f"docker-compose.yml has no service {name!r}"


def test_image_services_run_commands_that_exist():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    checked = 0
    for name, svc in _services().items():
        if not _uses_our_image(svc):
            continue
        argv = _argv(svc["command"])
        if argv[:2] == ["python", "-m"]:
            module = ROOT / argv[2].replace(".", "/")
            # a package with a __main__, or a module that runs itself (svc_reward.majority)
            runnable = (module / "__main__.py").is_file() or (
                module.with_suffix(".py").is_file()
                and '__name__ == "__main__"' in module.with_suffix(".py").read_text()
            )
            assert runnable, (
                f"{name}: `python -m {argv[2]}` is neither a package with __main__.py nor a runnable module"
            )
        else:
            assert argv[0] in scripts, f"{name}: {argv[0]!r} is not a console script in pyproject.toml"
        checked += 1
    assert checked >= len(GRPC_SERVICES)


def test_grpc_services_run_their_own_package():
    services = _services()
    for name in GRPC_SERVICES:
        assert _uses_our_image(services[name]), f"{name} is not built from deploy/Dockerfile"
        assert _argv(services[name]["command"]) == ["python", "-m", f"svc_{name}"]


def test_image_services_share_one_image_name():
    images = {svc.get("image") for svc in _services().values() if _uses_our_image(svc)}
    assert len(images) == 1 and None not in images, f"services built from deploy/Dockerfile tag {images}"


def test_depends_on_names_services_and_waits_on_a_condition():
    services = _services()
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must be a mapping with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            cond = (spec or {}).get("condition")
            assert cond in CONDITIONS, f"{name} -> {dep}: condition {cond!r}"
            if cond == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} healthy, but it has no healthcheck"
            if cond == "service_completed_successfully":
                assert _one_shot(services[dep]), f"{name} waits for {dep} to complete, but {dep} restarts"


def test_depends_on_has_no_cycle():
    services = _services()
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        assert state.get(n) != 1, f"dependency cycle: {' -> '.join(path + [n])}"
        state[n] = 1
        for d in services[n].get("depends_on") or {}:
            if d in services:  # unknown names: test_depends_on_names_services_and_waits_on_a_condition
                visit(d, path + [n])
        state[n] = 2

    for n in services:
        visit(n, [])


def test_startup_order():
    services = _services()
    sched = services["scheduler"]["depends_on"]
    for dep, cond in [
        ("nats", "service_healthy"),
        ("postgres", "service_healthy"),
        ("migrate", "service_completed_successfully"),
    ]:
        assert sched.get(dep, {}).get("condition") == cond, f"scheduler must wait for {dep}: {cond}"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("rollout", "reward", "trainer"):
        deps = services[name]["depends_on"]
        assert deps["scheduler"]["condition"] == "service_healthy", name
        assert deps["nats"]["condition"] == "service_healthy", name
    for name in ("rollout", "trainer"):
        assert services[name]["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully", name


def test_long_running_services_have_a_healthcheck():
    for name, svc in _services().items():
        if _one_shot(svc):
            continue
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable") and _argv(hc["test"])[0] != "NONE", f"{name} has no healthcheck"


def test_one_shot_jobs():
    services = _services()
    assert _argv(services["migrate"]["command"]) == ["jetrl", "db", "upgrade"]
    assert _argv(services["bootstrap"]["command"]) == ["jetrl", "bootstrap"]
    assert _one_shot(services["migrate"]) and _one_shot(services["bootstrap"])


def test_grpc_healthchecks_probe_the_listen_port():
    services = _services()
    rpc = ROOT / "jetrl" / "rpc.py"
    assert rpc.is_file() and '__name__ == "__main__"' in rpc.read_text()
    for name, default_port in GRPC_SERVICES.items():
        svc = services[name]
        listen = _env(svc).get("JETRL_LISTEN")
        assert listen, f"{name} sets no JETRL_LISTEN"
        argv = _healthcheck_argv(svc)
        assert argv[:3] == ["python", "-m", "jetrl.rpc"], f"{name}: healthcheck {argv}"
        assert _port(argv[3]) == _port(listen) == default_port, f"{name}: probe {argv[3]} vs listen {listen}"


def test_services_address_each_other_by_service_name():
    services = _services()
    for name in GRPC_SERVICES:
        env = _env(services[name])
        for other, port in GRPC_SERVICES.items():
            addr = env.get(f"JETRL_{other.upper()}_ADDR")
            assert addr == f"{other}:{_port(_env(services[other])['JETRL_LISTEN'])}" == f"{other}:{port}", (
                f"{name}: JETRL_{other.upper()}_ADDR={addr!r}"
            )
        assert urlparse(env["JETRL_NATS_URL"]).hostname == "nats", name
        assert "@postgres:5432/" in env["JETRL_DATABASE_URL"], name
        assert env["JETRL_DATABASE_URL"].startswith("postgresql+psycopg://"), name


def test_traces_go_to_jaeger_otlp_grpc():
    services = _services()
    assert "jaeger" in services["jaeger"]["image"]
    for name in GRPC_SERVICES:
        endpoint = urlparse(_env(services[name]).get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
        assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "jaeger", 4317), name


def test_scheduler_port_is_published():
    ports = [
        str(p) if not isinstance(p, dict) else f"{p.get('published')}:{p['target']}"
        for p in _services()["scheduler"].get("ports", [])
    ]
    assert any(p.split(":")[-1].split("/")[0] == "50051" for p in ports), ports


def test_data_volume_is_shared_by_trainer_rollout_and_bootstrap():
    compose = _compose()
    services = compose["services"]
    data_dirs = {_env(services[n]).get("JETRL_DATA_DIR") for n in ("trainer", "rollout", "bootstrap")}
    assert data_dirs == {"/data"}, data_dirs
    assert "JETRL_DATA_DIR=/data" in DOCKERFILE.read_text().replace(" ", "")
    volumes = set()
    for name in ("trainer", "rollout", "bootstrap", "scheduler"):
        named = [src for src, dst in _mounts(services[name]) if dst == "/data"]
        assert len(named) == 1, f"{name} mounts nothing at /data"
        volumes.add(named[0])
    assert len(volumes) == 1, f"/data is not one volume: {volumes}"
    (vol,) = volumes
    assert vol in (compose.get("volumes") or {}), f"{vol!r} is not a named volume"


def test_bind_mount_sources_exist():
    for name, svc in _services().items():
        for src, _ in _mounts(svc):
            if src.startswith((".", "/")):
                assert (ROOT / src).exists(), f"{name}: bind mount source {src} is missing"


def test_compose_cli_accepts_the_file():
    """The real parser, where a Docker Compose CLI is installed (`config` needs no engine)."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("no Docker Compose CLI here")
    proc = subprocess.run([*cmd, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# ---- the image -----------------------------------------------------------------------------


def test_dockerfile_exists_on_python_311_slim():
    assert DOCKERFILE.is_file()
    froms = [args for instr, args in _dockerfile_instructions() if instr == "FROM"]
    assert froms and froms[0].split()[0].startswith("python:3.11-slim"), froms


def test_dockerfile_copy_sources_exist_and_are_not_ignored():
    sources = _copy_sources()
    assert sources
    patterns = _dockerignore_patterns()
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: no such file in the repo"
        # an empty folder is not in a fresh clone (git keeps no empty folders)
        assert path.is_file() or any(f.is_file() for f in path.rglob("*")), f"COPY {src}: empty folder"
        assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"


def test_dockerfile_installs_with_the_constraints_file():
    instructions = _dockerfile_instructions()
    installs = [args for instr, args in instructions if instr == "RUN" and "pip install" in args]
    assert installs, "the Dockerfile installs nothing with pip"
    for args in installs:
        for cmd in args.split("pip install")[1:]:
            assert "-c constraints.txt" in cmd.split("&&")[0], f"pip install without -c constraints.txt: {cmd}"
    assert "constraints.txt" in _copy_sources()
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE.read_text(), "torch must come from the CPU index"


def test_dockerfile_runs_as_non_root():
    users = [args for instr, args in _dockerfile_instructions() if instr == "USER"]
    assert users and users[-1] not in ("root", "0"), users


def test_dockerignore_keeps_local_state_out():
    patterns = _dockerignore_patterns()
    for path in (".venv", ".jetrl", ".git", "jetrl/__pycache__"):
        assert _ignored(path, patterns), f".dockerignore does not exclude {path}"


def test_reward_servers_listen_where_jetrl_up_and_their_modules_say():
    """One port per built-in reward server (jetrl/ports.py): `jetrl up --rewards`, the module run
    alone (serve_alone looks its port up by the servicer's name), compose."""
    import importlib

    from jetrl.ports import REWARD_SERVERS

    by_module = {
        _argv(s["command"])[2]: s
        for s in _services().values()
        if _uses_our_image(s) and _argv(s.get("command", ["x"]))[:2] == ["python", "-m"]
    }
    for module, port in REWARD_SERVERS.items():
        assert _env(by_module[module])["JETRL_LISTEN"].endswith(f":{port}"), module
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert "serve_alone(" in source, f"{module} is not started by serve_alone"
        servicers = [
            v
            for v in vars(importlib.import_module(module)).values()
            if hasattr(v, "Score") and isinstance(getattr(v, "name", None), str)
        ]
        assert any(f"svc_reward.{s.name}" == module for s in servicers), f"{module}'s servicer is not named for it"


def test_each_service_listens_on_the_port_others_reach_it_by():
    from jetrl.config import Settings

    settings = Settings(scheduler_addr="scheduler:6001", reward_addr="10.0.0.1:6003")
    assert settings.listen_as(settings.scheduler_addr) == "127.0.0.1:6001"
    assert settings.listen_as(settings.reward_addr) == "127.0.0.1:6003"  # `python -m svc_reward` follows it
    assert Settings().listen_as(Settings().trainer_addr) == f"127.0.0.1:{ports.TRAINER}"
    for module, field in {
        "svc_scheduler": "scheduler_addr",
        "svc_rollout": "rollout_addr",
        "svc_reward": "reward_addr",
        "svc_trainer": "trainer_addr",
    }.items():
        assert f"settings.listen_as(settings.{field})" in (ROOT / module / "app.py").read_text(), module


# ---- the GPU rollout (profile gpu, deploy/Dockerfile.cuda) ----------------------------------

CUDA_DOCKERFILE = ROOT / "deploy" / "Dockerfile.cuda"


def test_the_gpu_rollout_is_the_rollout_service_on_the_cuda_image_with_a_gpu():
    services = _services()
    gpu, cpu = services["rollout-gpu"], services["rollout"]
    build = gpu["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == CUDA_DOCKERFILE
    assert gpu["profiles"] == ["gpu"] and gpu["image"] != cpu["image"]
    concurrency = "JETRL_ROLLOUT_CONCURRENCY"  # the one difference: vLLM batches many tasks at once
    assert _argv(gpu["command"]) == _argv(cpu["command"])
    assert {k: v for k, v in _env(gpu).items() if k != concurrency} == _env(cpu)
    assert int(_env(gpu)[concurrency].split(":-")[-1].rstrip("}")) > 1
    assert gpu["networks"]["default"]["aliases"] == ["rollout"]  # the others reach it as `rollout`
    assert _mounts(gpu) == _mounts(cpu) and gpu["depends_on"] == cpu["depends_on"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_the_cuda_image_installs_vllm_deepspeed_and_jetrl_with_the_constraints_as_non_root():
    text = CUDA_DOCKERFILE.read_text()
    assert "'vllm==0.32.0'" in text and "download.pytorch.org/whl/cpu" not in text
    # the trainer of the k8s GPU overlay runs from it: DeepSpeed (train.engine: deepspeed) is what uses its GPU
    assert "DS_BUILD_OPS=0 pip install -c constraints.txt 'vllm==0.32.0' '.[deepspeed]'" in text.replace("\\\n", " ")
    runs = [line for line in text.replace("\\\n", " ").splitlines() if line.startswith("RUN")]
    installs = [cmd for run in runs for cmd in run.split("pip install")[1:]]
    assert installs and all("-c constraints.txt" in cmd.split("&&")[0] for cmd in installs)
    for src in [line.split()[1] for line in text.splitlines() if line.startswith("COPY")]:
        assert (ROOT / src).exists(), src
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0")


# ---- NATS users ------------------------------------------------------------------------------


def _role_of(svc: dict) -> str | None:
    """The role of a service of the bus (jetrl/bus/permissions.py SERVICE_ROLES), by the module it runs."""
    from jetrl.bus.permissions import SERVICE_ROLES

    argv = _argv(svc.get("command") or [])
    return SERVICE_ROLES.get(argv[2]) if argv[:2] == ["python", "-m"] and len(argv) > 2 else None


def test_nats_runs_the_users_rendered_from_the_topology():
    from jetrl.bus.permissions import USERS, password_variable, render_authorization

    nats = _services()["nats"]
    config = Path(_argv(nats["command"])[_argv(nats["command"]).index("--config") + 1])
    [mount] = [v for v in nats["volumes"] if v.split(":")[1] == str(config.parent)]
    source = ROOT / mount.split(":")[0]
    assert "include auth.conf" in (source / config.name).read_text()
    assert (source / "auth.conf").read_text() == render_authorization()
    assert set(_env(nats)) == {password_variable(user) for user in USERS}


def test_each_bus_service_connects_as_its_role_and_the_admin_declares_first():
    from jetrl.bus.permissions import ADMIN, password_variable

    services = _services()
    passwords = _env(services["nats"])
    declare = services["nats-declare"]
    assert _argv(declare["command"]) == ["jetrl", "nats", "declare"] and _one_shot(declare)
    assert _env(declare)["JETRL_NATS_USER"] == ADMIN
    assert _env(declare)["JETRL_NATS_PASSWORD"] == passwords[password_variable(ADMIN)]
    assert declare["depends_on"]["nats"]["condition"] == "service_healthy"
    roles = {name: _role_of(svc) for name, svc in services.items()}
    assert {"scheduler", "rollout", "rollout-gpu", "reward", "trainer"} <= {n for n, r in roles.items() if r}
    for name, svc in services.items():
        env = _env(svc)
        if roles[name] is None:  # no bus: no NATS user (the reward servers alone, the other jobs)
            assert "JETRL_NATS_PASSWORD" not in env or name == "nats-declare", name
            continue
        assert env["JETRL_NATS_USER"] == roles[name], name
        assert env["JETRL_NATS_PASSWORD"] == passwords[password_variable(roles[name])], name
        assert svc["depends_on"]["nats-declare"]["condition"] == "service_completed_successfully", name


# ---- metrics: Prometheus and Grafana -------------------------------------------------------


def test_prometheus_and_grafana_run_pinned_images():
    services = _services()
    for name in ("prometheus", "grafana"):
        repo, _, tag = services[name]["image"].rpartition(":")
        assert repo and tag and tag != "latest", f"{name} image is not pinned by tag"


def test_each_service_serves_metrics_on_its_port_and_prometheus_scrapes_it():
    services = _services()
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert set(jobs) == set(ports.METRICS) == set(GRPC_SERVICES)
    for name, port in ports.METRICS.items():
        assert _env(services[name])["JETRL_METRICS_PORT"] == str(port), name
        [sd] = jobs[name]["dns_sd_configs"]  # every replica of the service, not only one
        assert (sd["names"], sd["type"], sd["port"]) == ([name], "A", port), name
    assert _env(services["rollout-gpu"])["JETRL_METRICS_PORT"] == str(ports.METRICS["rollout"])
    assert ("./deploy/prometheus", "/etc/prometheus") in _mounts(services["prometheus"])


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard():
    services = _services()
    mounts = dict(_mounts(services["grafana"]))
    provisioning = GRAFANA / "provisioning"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = urlparse(source["url"])
    assert (source["type"], url.hostname, url.port) == ("prometheus", "prometheus", 9090)
    [provider] = yaml.safe_load((provisioning / "dashboards" / "jetrl.yml").read_text())["providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((GRAFANA / "dashboards" / "jetrl.json").read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {source["uid"]}


def test_the_dashboard_queries_only_metrics_the_services_export():
    exprs = [
        t["expr"]
        for p in json.loads((GRAFANA / "dashboards" / "jetrl.json").read_text())["panels"]
        for t in p["targets"]
    ]
    named = {name for expr in exprs for name in re.findall(r"\bjetrl_\w+", expr)}
    assert named <= SERIES, f"the dashboard queries {sorted(named - SERIES)}, which jetrl/metrics.py does not export"
    # and every instrument has a panel
    assert {n.removesuffix("_bucket").removesuffix("_total") for n in named} == {
        n.rsplit("_", 1)[0] if n.endswith(("_bucket", "_sum", "_count")) else n.removesuffix("_total") for n in SERIES
    }
