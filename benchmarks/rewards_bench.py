"""Rewards with and without labels (verify, majority, co_reward, teacher) and grpo vs mc_grpo at
G = 2, three seeds each, on a harder arithmetic variant where version 0 is weak (docs/rewards.md).

Run:  .venv/bin/python benchmarks/rewards_bench.py [--arms verify co_reward ...] [--seeds 0 1 2]
Same as `jetrl bench rewards`; `--help` lists every option and its default. It needs Postgres at
JETRL_DATABASE_URL's server (it uses its own database there, `jetrl_bench`) and starts its own
nats-server, services and label-free reward servers on free ports, so it leaves any running stack
alone. It prints the tables and writes, under --out DIR (default $JETRL_DATA_DIR/bench),
rewards.json and the plot img/rewards.png (--markdown PATH for markdown tables).
"""

import sys

from jetrl.bench.rewards import main

if __name__ == "__main__":
    sys.exit(main())
