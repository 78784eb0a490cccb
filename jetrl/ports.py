"""Every port jetrl listens on by default, declared once.

The settings' default addresses (jetrl/config.py) and the servers' default listen addresses are
made from these; docker-compose.yml and the Dockerfile write them out, and tests/unit/test_compose.py
checks that they agree with this module.
"""

from __future__ import annotations

__all__ = ["SCHEDULER", "ROLLOUT", "REWARD", "TRAINER", "REWARD_SERVERS", "METRICS", "port_of"]

SCHEDULER = 50051
ROLLOUT = 50052
REWARD = 50053  # the reward stage's process and its built-in `verify` server
TRAINER = 50054
# the built-in reward servers that run alone (`python -m svc_reward.<name>`, `jetrl up --rewards`)
REWARD_SERVERS = {
    "svc_reward.majority": 50055,
    "svc_reward.co_reward": 50056,
    "svc_reward.teacher": 50057,
    "svc_reward.process": 50058,
}

# each service's Prometheus endpoint (the `metrics_port` setting turns it on), one port apiece so
# that the four can share a host; deploy/prometheus/prometheus.yml scrapes these
METRICS = {
    "scheduler": 9451,
    "rollout": 9452,
    "reward": 9453,
    "trainer": 9454,
}


def port_of(address: str) -> int:
    """The port of a `host:port` address."""
    return int(address.rsplit(":", 1)[1])
