"""jetrl/cli/stack.py: the metrics ports of a local stack, chosen without starting anything."""

import socket

from jetrl.cli.stack import SERVICES, choose_metrics_ports, metrics_ports
from jetrl.config import Settings
from jetrl.localstack import free_port
from jetrl.ports import port_of


def test_a_preferred_port_something_listens_on_is_replaced_by_a_free_one(tmp_path):
    """`jetrl up` prefers ports.py's METRICS; one held by another program once stopped the service
    (its metrics server could not bind) and so the whole stack."""
    settings = Settings(data_dir=tmp_path, nats_url=f"nats://127.0.0.1:{free_port()}")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        prefer = {module: free_port() for module in SERVICES} | {"svc_scheduler": busy}
        prefer["svc_reward"] = port_of(settings.nats_url)  # the stack's own broker's: never
        chosen = choose_metrics_ports(settings, prefer=prefer)
    assert chosen["svc_scheduler"] != busy and chosen["svc_reward"] != port_of(settings.nats_url)
    assert all(chosen[m] == prefer[m] for m in ("svc_rollout", "svc_trainer"))  # free: kept
    grpc = {port_of(getattr(settings, field)) for field in SERVICES.values()}
    assert len(set(chosen.values())) == len(SERVICES) and not grpc & set(chosen.values())
    assert metrics_ports(settings) == chosen  # what start_service gives each service
