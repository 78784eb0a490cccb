"""Run:  python -m svc_trainer   (settings from JETRL_* environment variables, see jetrl/config.py)"""

from jetrl.service import run_service


def _main(settings):
    from svc_trainer.app import main  # late: torch loads only in the service

    return main(settings)


if __name__ == "__main__":
    run_service("svc_trainer", _main)
