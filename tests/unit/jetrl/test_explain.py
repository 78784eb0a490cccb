"""`jetrl explain` (jetrl/cli/explain.py): one sample's story as it prints it, from fixed lineage rows."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from jetrl.cli.explain import Story, render, trace_link, version_runs


def sample(**fields) -> SimpleNamespace:
    row = dict(
        sample_id="r.g000003.1",
        run_id="r",
        group_id="r.g000003",
        group_state="trained",
        index=1,
        view="main",
        prompt="3+4=",
        reference="7",
        text="7",
        prompt_token_ids=[5, 6, 7],
        completion_token_ids=[8, 9, 2],
        token_versions=[0, 0, 1],
        finish_reason="eos",
        worker_id="w2",
        attempts=2,
        prefix_len=2,
        regenerated=0,
        reward=1.0,
        reward_server="verify@1",
        advantage=0.7071,
        trained_version=2,
        batch_id="r.b000001",
        batch_step=1,
        staleness=1,
        trained_tokens=3,
        stale_masked_tokens=0,
        offpolicy_tokens=2,
        trace_id="ab" * 16,
    )
    return SimpleNamespace(**{**row, **fields})


def shown(story: Story, jaeger: str = "http://jaeger:16686/") -> str:
    console = Console(record=True, width=200)
    for part in render(story, jaeger):
        console.print(part)
    return console.export_text()


def test_version_runs_are_the_stretches_one_version_generated():
    assert version_runs([0, 0, 1, 1, 1, 3]) == [(0, 2, 0), (2, 5, 1), (5, 6, 3)]
    assert version_runs([]) == []


def test_a_resumed_trained_sample_tells_versions_segments_rewards_training_and_trace():
    segments = [
        SimpleNamespace(attempt=0, worker_id="w1", start=0, end=2, min_version=0, max_version=0, finish_reason="abort"),
        SimpleNamespace(attempt=1, worker_id="w2", start=2, end=3, min_version=1, max_version=1, finish_reason="eos"),
    ]
    rewards = [
        SimpleNamespace(
            server="verify@1", endpoint="127.0.0.1:50053", reward=1.0, extracted_answer="7", detail="correct"
        )
    ]
    text = shown(Story(sample(), segments, rewards))
    for line in (
        "sample r.g000003.1",
        "run r, group r.g000003 (trained)",
        "prompt '3+4=', reference '7'",
        "3 completion tokens after 3 prompt tokens, finished by eos on w2, 2 attempt(s), 2 tokens recycled",
        "rewards (combined 1, scored by verify@1)",
        "trained in batch r.b000001 (step 1) into version 2: advantage +0.7071, staleness 1, 3 tokens trained, "
        "0 masked as too stale, 2 off-policy",
        "trace: http://jaeger:16686/trace/" + "ab" * 16,
    ):
        assert line in text, line
    table_rows = [" ".join(line.replace("│", " ").split()) for line in text.splitlines()]
    assert "[0, 2) v0" in table_rows and "[2, 3) v1" in table_rows
    assert "0 w1 [0, 2) v0 abort" in table_rows and "1 w2 [2, 3) v1 eos" in table_rows
    assert "verify@1 127.0.0.1:50053 1 '7' correct" in table_rows


def test_an_untrained_sample_without_a_trace_says_so():
    untrained = sample(
        trained_version=None, batch_id=None, batch_step=None, group_state="filtered", reward=None, trace_id=""
    )
    text = shown(Story(untrained, [], []))
    assert "not trained (its group is filtered)" in text and "rewards (combined none yet" in text
    assert "no trace recorded for this sample" in text
    assert trace_link("http://j:16686", "cd" * 16) == "http://j:16686/trace/" + "cd" * 16
