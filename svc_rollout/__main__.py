"""Run:  python -m svc_rollout   (settings from JETRL_* environment variables, see jetrl/config.py)"""

from jetrl.service import run_service


def _main(settings):
    from svc_rollout.app import main  # late: torch and transformers load only in the service

    return main(settings)


if __name__ == "__main__":
    run_service("svc_rollout", _main)
