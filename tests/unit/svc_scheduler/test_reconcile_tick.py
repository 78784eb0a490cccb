"""The scheduler's reconcile tick (svc_scheduler/app.py:reconcile_runs): an outage postpones a run,
a run whose reconcile keeps failing ends FAILED with the error, and neither stops the others."""

from sqlalchemy.exc import OperationalError

from svc_scheduler.app import RECONCILE_GIVE_UP, reconcile_runs


class Coordinator:
    """Active runs whose reconcile raises what `errors` says (None: succeeds)."""

    def __init__(self, errors):
        self.errors = errors
        self.reconciled, self.failed = [], {}

    def active(self):
        return [r for r in self.errors if r not in self.failed]

    async def reconcile(self, run_id):
        if self.errors[run_id] is not None:
            raise self.errors[run_id]
        self.reconciled.append(run_id)

    async def fail(self, run_id, reason):
        self.failed[run_id] = reason


async def test_a_run_whose_reconcile_keeps_failing_ends_failed_and_the_others_go_on():
    outage = OperationalError("SELECT 1", {}, ConnectionRefusedError("db down"))
    coordinator = Coordinator({"good": None, "broken": KeyError("group g7"), "waiting": outage})
    failures: dict[str, int] = {}
    for _ in range(RECONCILE_GIVE_UP):
        assert "broken" not in coordinator.failed  # one bad tick is not enough
        await reconcile_runs(coordinator, failures)
    assert coordinator.reconciled == ["good"] * RECONCILE_GIVE_UP
    assert coordinator.failed == {"broken": "the scheduler cannot reconcile the run: KeyError: 'group g7'"}
    assert "waiting" not in coordinator.failed and failures == {}  # an outage is waited out, never counted


async def test_a_success_resets_the_count():
    coordinator = Coordinator({"flaky": KeyError("x")})
    failures: dict[str, int] = {}
    for _ in range(RECONCILE_GIVE_UP - 1):
        await reconcile_runs(coordinator, failures)
    coordinator.errors["flaky"] = None
    await reconcile_runs(coordinator, failures)
    coordinator.errors["flaky"] = KeyError("x")
    for _ in range(RECONCILE_GIVE_UP - 1):
        await reconcile_runs(coordinator, failures)
    assert coordinator.failed == {}
