"""Synchronous vs asynchronous training (AReaL staleness η) and APRIL over-provisioning (ρ),
side by side in one run, through the real services on simulated hardware.

Run:  .venv/bin/python benchmarks/async_bench.py [--configs sync async-4 ...] [--steps 16]
      .venv/bin/python benchmarks/async_bench.py --real [--seeds 0 1]   # the demo on CPU, η=0 vs η=2
Same as `jetrl bench async`; `--help` lists every option and its default. It needs Postgres at
JETRL_DATABASE_URL's server (it uses its own database there, `jetrl_bench`) and starts its own
nats-server and services on free ports, so it leaves any running stack alone. It prints a table
and writes, under --out DIR (default $JETRL_DATA_DIR/bench), async_bench.json and the plot
img/async_bench.png (--markdown PATH for a markdown table).
"""

import sys

from jetrl.bench.async_cli import main

if __name__ == "__main__":
    sys.exit(main())
