"""Run:  python -m svc_trainer   (settings from JETRL_* environment variables, see jetrl/config.py)"""

from jetrl.service import run_app

if __name__ == "__main__":
    run_app("svc_trainer")
