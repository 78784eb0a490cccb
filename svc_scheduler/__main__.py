"""Run:  python -m svc_scheduler   (settings from JETRL_* environment variables, see jetrl/config.py)"""

from jetrl.service import run_service


def _main(settings):
    from svc_scheduler.app import main  # late: keep `--help`-style failures fast and imports in one place

    return main(settings)


if __name__ == "__main__":
    run_service("svc_scheduler", _main)
