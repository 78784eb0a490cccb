import math

import pytest
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


def test_april_over_provisions_and_aborts_only_when_nothing_more_is_needed():
    a = Admission(max_staleness=0, batch_groups=4, max_concurrent=64, total_steps=10, over_provision=2.0)
    assert a.slots(version=0, accepted=0, running=0) == 8
    # 3 of the batch's 4 are complete: 5 still generating, nothing new starts, nothing is aborted
    assert a.slots(version=0, accepted=3, running=5) == 0 and not a.must_abort(0, 3, 5)
    assert a.must_abort(version=0, accepted=4, generating=4)  # the batch is full: abort the rest
    assert a.slots(version=1, accepted=4, running=0) == 8  # next version: the buffer first, then new
    assert not Admission(0, 4, 64, 10).must_abort(0, 4, 0)


def test_counters_come_back_from_lineage_after_a_restart():
    # a restarted scheduler counts accepted = v·B groups (from lineage), not 0: no burst of admissions
    a = Admission(max_staleness=1, batch_groups=4, max_concurrent=64, total_steps=10)
    assert a.slots(version=3, accepted=3 * 4, running=0) == 8
    assert a.slots(version=3, accepted=0, running=0) == 20  # what forgetting would admit


def test_regenerate_marks_prefixes_the_next_batch_could_not_train():
    assert Admission(2, 4, 64, 10, regenerate_after_lag=2).stale_before(batches_sealed=5) == 3
    assert Admission(2, 4, 64, 10).stale_before(batches_sealed=5) is None
    # a run that trains recycled prefixes up to 3 versions old regenerates only older ones
    assert Admission(2, 4, 64, 10, regenerate_after_lag=3).stale_before(batches_sealed=5) == 2


@given(
    eta=st.integers(0, 8),
    b=st.integers(1, 16),
    version=st.integers(0, 50),
    accepted=st.integers(0, 2000),
    running=st.integers(0, 200),
)
def test_admitted_groups_never_exceed_the_staleness_bound(eta, b, version, accepted, running):
    """ρ = 1 is AReaL's bound: started groups never exceed (η + v + 1)·B, and it never aborts."""
    a = Admission(max_staleness=eta, batch_groups=b, max_concurrent=10_000, total_steps=1_000)
    n = a.slots(version, accepted, running)
    assert n >= 0
    if n:
        assert accepted + running + n <= (eta + version + 1) * b
    if running <= a.needed(version, accepted):
        assert not a.must_abort(version, accepted, running)


@pytest.mark.parametrize(("recycled", "lag"), [(None, 2), (3, 3)])
def test_a_run_regenerates_prefixes_past_its_recycled_bound(untrained_model_dir, recycled, lag):
    """The bound is the spec's one rule (ScheduleSpec.recycled_bound: recycled_staleness, else η)."""
    from jetrl.config import RunSpec
    from svc_scheduler.active import prepare

    schedule = {
        "max_staleness": 2,
        "over_provision": 2.0,
        "stale_partials": "regenerate",
        "recycled_staleness": recycled,
    }
    spec = RunSpec.model_validate({"model": {"path": str(untrained_model_dir)}, "schedule": schedule})
    assert prepare("r", spec).admission.regenerate_after_lag == lag
    masked = spec.model_copy(update={"schedule": spec.schedule.model_copy(update={"stale_partials": "mask"})})
    assert prepare("r", masked).admission.regenerate_after_lag is None


def test_april_spares_are_a_batch_s_worth_not_a_multiple_of_every_open_batch():
    """With η > 0 the open batches need (η + v + 1)·B groups; APRIL's spares are for the batch
    being generated, so they start only as the bound nears (ρ·B = 8 at most here), not ρ times
    every open batch (40), which would start groups that finish too late to train."""
    a = Admission(max_staleness=4, batch_groups=4, max_concurrent=1024, total_steps=100, over_provision=2.0)
    assert a.slots(version=0, accepted=0, running=0) == 20  # AReaL's need: no spare yet
    assert a.slots(version=0, accepted=17, running=3) == 3  # 3 still needed: 6 may generate
    assert a.slots(version=0, accepted=19, running=0) == 2  # 1 still needed: 2 may generate
    assert a.must_abort(version=0, accepted=20, generating=2)


@given(
    eta=st.integers(0, 8),
    b=st.integers(1, 16),
    rho=st.floats(1.0, 4.0),
    version=st.integers(0, 50),
    accepted=st.integers(0, 2000),
    running=st.integers(0, 200),
)
def test_april_keeps_at_most_rho_times_the_next_batch_s_need_beyond_areal(eta, b, rho, version, accepted, running):
    a = Admission(eta, b, max_concurrent=10_000, total_steps=1_000, over_provision=rho)
    need = a.needed(version, accepted)
    n = a.slots(version, accepted, running)
    assert n >= 0
    if n:
        assert running + n <= max(need, math.ceil(rho * min(need, b)))
    if need <= b:  # one batch open (η = 0 once its v·B groups are in): APRIL's rule as it always was
        assert a.in_flight_bound(version, accepted) == math.ceil(rho * need)
