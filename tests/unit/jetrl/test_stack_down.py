"""`jetrl down` (jetrl.cli.stack.down) ends what `up` recorded: the four services together, then the
servers started beside them, the broker last, each with SIGTERM (its graceful stop)."""

import subprocess
import sys
import time
from pathlib import Path

from jetrl.cli.stack import SERVICES, down
from jetrl.config import Settings

# Stands in for a process of the stack: on SIGTERM it marks `<name>.term`, waits (up to 10 s)
# until every name after `--` has marked `<other>.<mark>`, marks `<name>.clean` if they all did,
# and exits.
PROCESS = """
import pathlib, signal, sys, time
marks, name, mark = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
others = sys.argv[5:]
def on_term(*_):
    (marks / f"{name}.term").touch()
    deadline = time.monotonic() + 10
    while not all((marks / f"{o}.{mark}").exists() for o in others):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.02)
    (marks / f"{name}.clean").touch()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
(marks / f"{name}.ready").touch()
while True:
    time.sleep(0.1)
"""


def start(marks: Path, pids: Path, name: str, mark: str, others: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", PROCESS, str(marks), name, mark, "--", *others])
    (pids / f"{name}.pid").write_text(str(proc.pid))
    return proc


def test_down_stops_the_services_together_then_what_is_beside_them_then_the_broker(tmp_path):
    marks, pids = tmp_path / "marks", tmp_path / "pids"
    marks.mkdir()
    pids.mkdir()
    services = list(SERVICES)
    procs = [start(marks, pids, name, "term", services) for name in services]  # each waits for all four's SIGTERM
    procs.append(start(marks, pids, "reward-server", "clean", services))  # for the services to be ended
    procs.append(start(marks, pids, "nats-server", "clean", [*services, "reward-server"]))  # for everything
    names = [*services, "reward-server", "nats-server"]
    try:
        deadline = time.monotonic() + 30
        while not all((marks / f"{n}.ready").exists() for n in names):
            assert time.monotonic() < deadline, "the stand-in processes did not start"
            time.sleep(0.05)
        down(Settings(data_dir=tmp_path), timeout=20)
        # one by one, the first service would have waited for the others' SIGTERM and given up
        assert sorted(p.name for p in marks.glob("*.clean")) == sorted(f"{n}.clean" for n in names)
        assert not list(pids.glob("*.pid"))
    finally:
        for proc in procs:  # the processes this test started, by their handles
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
