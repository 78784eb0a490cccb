from hypothesis import given
from hypothesis import strategies as st

from svc_scheduler.admission import Admission


def test_synchronous_admits_one_batch_per_version():
    a = Admission(max_staleness=0, batch_groups=4, max_concurrent=64, total_steps=10)
    assert a.slots(version=0, accepted=0, running=0) == 4
    assert a.slots(version=0, accepted=2, running=2) == 0
    assert a.slots(version=1, accepted=4, running=0) == 4


def test_staleness_allows_eta_batches_ahead():
    a = Admission(max_staleness=2, batch_groups=4, max_concurrent=64, total_steps=10)
    assert a.slots(version=0, accepted=0, running=0) == 12


def test_concurrency_cap_and_run_end():
    a = Admission(max_staleness=8, batch_groups=4, max_concurrent=5, total_steps=2)
    assert a.slots(version=0, accepted=0, running=0) == 5
    assert a.slots(version=0, accepted=5, running=2) == 1
    assert a.slots(version=1, accepted=8, running=0) == 0


@given(
    eta=st.integers(0, 8), b=st.integers(1, 16), version=st.integers(0, 50),
    accepted=st.integers(0, 2000), running=st.integers(0, 200),
)
def test_admitted_groups_never_exceed_the_staleness_bound(eta, b, version, accepted, running):
    a = Admission(max_staleness=eta, batch_groups=b, max_concurrent=10_000, total_steps=1_000)
    n = a.slots(version, accepted, running)
    assert n >= 0
    if n:
        newest_step = a.step_of(accepted + running + n - 1)
        assert newest_step - version <= eta
