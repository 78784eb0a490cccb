"""The chaos suite (`jetrl chaos`): randomized trials that kill and cut off parts of a private
stack while small runs train, then check from lineage that nothing was lost or trained twice.

    plan.py        the trials a seed stands for: spec kind, fault, moment, delay (typed config)
    cluster.py     a Postgres cluster of its own (initdb, pg_ctl), so outages touch nothing else
    stack.py       the private stack (`jetrl up`'s launcher) and its faults: SIGKILL + restart,
                   broker restart with its store, database outage, a second worker lost
    trial.py       one trial: submit, inject at the moment, follow with timeouts, check
    invariants.py  what must hold afterwards, read back from lineage and the trainer
    report.py      the progress lines, the table, chaos.json and chaos.md
    runner.py      the command line and the loop over trials

docs/reliability.md says what it checks and how to run it; tests/e2e/test_chaos.py is the short
version the test suite runs.
"""
