"""jetrl/cli/watch.py: what the live status line and the log lines say about a run."""

from jetrl.cli.watch import collapse_signs, describe, reward_failure
from jetrl.v1 import services_pb2 as svc


def progress(**fields) -> svc.RunProgress:
    return svc.RunProgress(
        **{"run_id": "r", "heldout_version": -1, "teacher_version": -1, "mean_reward": 0.5, **fields}
    )


def test_a_healthy_run_shows_no_failure_counters():
    line = describe(progress(samples_trained=8, samples_generated=12))
    assert "trained 8/12" in line and "held-out pending" in line
    assert "reward failures" not in line and "dead letters" not in line and "teacher" not in line


def test_reward_failures_drops_filters_and_the_teacher_show_when_present():
    line = describe(progress(reward_failures=3, groups_dropped=2, groups_filtered=1, teacher_version=4))
    assert "reward failures 3 (dropped 2)" in line and "filtered 1" in line and "teacher v4" in line


def test_a_reward_failure_says_which_endpoint_why_and_what_to_do():
    line = reward_failure(
        progress(reward_failures=2, groups_dropped=1, last_reward_error="127.0.0.1:50056: UNAVAILABLE after 2 tries")
    )
    assert "127.0.0.1:50056: UNAVAILABLE after 2 tries" in line and "2 groups so far, 1 dropped" in line
    assert "reward.on_failure" in line and "jetrl reward check" in line


NAN = float("nan")


def test_collapse_signs_show_what_is_known_and_nothing_before():
    assert collapse_signs(svc.RunProgress(entropy=NAN, kl=NAN, top_answer_share=NAN)) == ""
    p = svc.RunProgress(entropy=0.4321, kl=NAN, top_answer_share=0.86, heldout_version=-1, mean_reward=NAN)
    assert collapse_signs(p) == "  entropy 0.432  top answer 86%"
    assert "entropy 0.432  top answer 86%" in describe(p)
