"""Run:  python -m svc_reward   (settings from JETRL_* environment variables, see jetrl/config.py)"""

from jetrl.service import run_service


def _main(settings):
    from svc_reward.app import main

    return main(settings)


if __name__ == "__main__":
    run_service("svc_reward", _main)
