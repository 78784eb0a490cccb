"""The NATS users (jetrl/bus/permissions.py): tied to the topology and to the services' code, rendered
into the checked-in configs, and their passwords kept private (jetrl/bus/credentials.py).

The broker enforcing them is tests/integration/jetrl/test_nats_permissions.py.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from jetrl.bus import topology
from jetrl.bus.credentials import ensure_passwords, server_env
from jetrl.bus.permissions import ROLES, SERVICE_ROLES, USERS, password_variable, permissions, render_authorization
from jetrl.bus.topology import CONSUMERS, ConsumerSpec, Kind
from jetrl.cli.nats_config import with_role
from jetrl.config import Settings
from jetrl.localstack import nats_server_binary

ROOT = Path(__file__).resolve().parents[3]
COPIES = [ROOT / "deploy" / "nats" / "auth.conf", ROOT / "deploy" / "k8s" / "base" / "nats" / "auth.conf"]
SPECS = {name: spec for name, spec in vars(topology).items() if isinstance(spec, ConsumerSpec)}


@pytest.mark.parametrize("copy", COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_checked_in_configs_are_the_rendered_one(copy):
    assert copy.read_text() == render_authorization(), f"regenerate it: jetrl nats config > {copy.relative_to(ROOT)}"


def test_every_kind_has_one_publisher_and_every_consumer_one_role():
    for kind in Kind:
        owners = [role.name for role in ROLES.values() if kind in role.publishes]
        assert len(owners) == (0 if kind is Kind.DLQ else 1), (kind, owners)
    assert sorted(spec.name for role in ROLES.values() for spec in role.consumes) == sorted(c.name for c in CONSUMERS)
    assert set(SERVICE_ROLES.values()) == set(ROLES) and USERS == ("admin", *ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_a_roles_kinds_and_consumers_are_what_its_service_does(role):
    """Read from the service's code: the kinds it publishes, the consumers and broadcasts its app uses."""
    package = ROOT / f"svc_{role}"
    code = "\n".join(p.read_text() for p in package.glob("*.py"))
    app = (package / "app.py").read_text()
    published = {Kind[k] for k in re.findall(r"\bpublish\(\s*[\w.]+,\s*[\w.]+,\s*Kind\.(\w+)", code)}
    consumed = {spec for name, spec in SPECS.items() if re.search(rf"\b{name}\b", app)}
    followed = {Kind[k] for k in re.findall(r"\bfollow\(\s*js,\s*Kind\.(\w+)", app)}
    assert published == ROLES[role].publishes
    assert consumed == set(ROLES[role].consumes)
    assert followed == ROLES[role].follows
    assert SERVICE_ROLES[package.name] == role


def test_a_role_may_touch_only_its_own_subjects():
    rollout = permissions(ROLES["rollout"])
    assert "jetrl.*.rollouts" in rollout.publish and "jetrl.*.dlq" in rollout.publish
    assert not [s for s in rollout.publish if s.startswith("jetrl.") and s.split(".")[2] in ("weights", "batches")]
    assert not [s for s in rollout.publish if ".CREATE." in s and not s.endswith(("_WEIGHTS", "_TEACHER", "_CONTROL"))]
    assert not [s for s in rollout.publish if re.search(r"STREAM\.(CREATE|UPDATE|DELETE|PURGE)|CONSUMER\.DELETE", s)]
    assert rollout.subscribe == ("_INBOX.rollout.>",)
    assert not [s for r in ROLES.values() for s in permissions(r).publish if s in (">", "$JS.API.>", "jetrl.>")]


def test_the_rendered_users_parse_and_hold_no_password(tmp_path):
    passwords = ensure_passwords(tmp_path / "passwords.env")
    text = render_authorization()
    assert not [p for p in passwords.values() if p in text]
    for user in USERS:
        assert f'user: "{user}", password: ${password_variable(user)},' in text
    (tmp_path / "auth.conf").write_text(text)
    (tmp_path / "nats.conf").write_text("port: 4222\njetstream {store_dir: /tmp/x}\ninclude auth.conf\n")
    env = {**os.environ, **server_env(passwords)}
    proc = subprocess.run([nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_passwords_are_private_kept_and_completed(tmp_path):
    env_file = tmp_path / "secrets" / ".env"
    env_file.parent.mkdir()
    env_file.write_text("POSTGRES_PASSWORD=p\nNATS_ADMIN_PASSWORD=mine")  # compose's .env, no final newline
    passwords = ensure_passwords(env_file)
    assert passwords["admin"] == "mine" and set(passwords) == set(USERS)
    assert all(re.fullmatch(r"[A-Za-z][\w-]{20,}", passwords[user]) for user in ROLES)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text().startswith("POSTGRES_PASSWORD=p\nNATS_ADMIN_PASSWORD=mine\n")
    assert ensure_passwords(env_file) == passwords  # nothing new the second time


def test_jetrl_up_gives_each_service_its_role_and_nothing_else_a_nats_user(tmp_path):
    settings = Settings(data_dir=tmp_path)
    env = {"JETRL_NATS_USER": "admin", "JETRL_NATS_PASSWORD": "a", "JETRL_NATS_TOKEN": "t", "PATH": "/bin"}
    assert with_role(env, settings, "svc_trainer") == env  # no broker of the stack's own: as configured
    passwords = ensure_passwords(tmp_path / "nats-auth" / "passwords.env")
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "nats-server.pid").write_text("1")
    assert with_role(env, settings, "svc_trainer") == {
        "PATH": "/bin",
        "JETRL_NATS_USER": "trainer",
        "JETRL_NATS_PASSWORD": passwords["trainer"],
    }
    assert with_role(env, settings, "svc_reward.majority") == {"PATH": "/bin"}  # a reward server alone
