"""jetrl.policy.bootstrap: a (very short) supervised warm-up writes a loadable version 0."""

import json
import math

import pytest

from jetrl.policy import load_policy
from jetrl.policy.bootstrap import bootstrap
from jetrl.policy.generate import heldout_accuracy
from jetrl.spec_sections import TaskSpec
from jetrl.tasks import make_task


def test_bootstrap_writes_a_loadable_model_with_its_metrics(tmp_path):
    spec = TaskSpec(heldout_size=8)
    calls = []
    out = tmp_path / "v0"
    metrics = bootstrap(
        out, spec, steps=5, batch_size=8, progress=lambda step, total, loss: calls.append((step, total, loss))
    )
    assert [c[:2] for c in calls] == [(i, 5) for i in range(1, 6)]
    assert all(math.isfinite(c[2]) and c[2] > 0 for c in calls)

    assert (out / "config.json").is_file()
    saved = json.loads((out / "bootstrap.json").read_text())
    assert saved == metrics
    assert 0.0 <= saved["heldout_accuracy"] <= 1.0
    assert saved["steps"] == 5 and saved["heldout_size"] == 8 and saved["seed"] == 0
    assert saved["path"] == str(out)
    assert saved["final_loss"] == pytest.approx(calls[-1][2])
    assert saved["task"]["name"] == "arithmetic"

    model, tokenizer = load_policy(out)
    assert saved["parameters"] == sum(p.numel() for p in model.parameters())
    # the recorded accuracy is that of the saved checkpoint
    model.eval()
    assert heldout_accuracy(model, tokenizer, make_task(spec).heldout(), max_new_tokens=8) == saved["heldout_accuracy"]


def test_bootstrap_is_reproducible(tmp_path):
    spec = TaskSpec(heldout_size=4)
    a = bootstrap(tmp_path / "a", spec, steps=2, batch_size=4)
    b = bootstrap(tmp_path / "b", spec, steps=2, batch_size=4)
    assert a["final_loss"] == b["final_loss"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_a_teacher_error_outside_zero_to_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="teacher_error"):
        bootstrap(tmp_path / "m", TaskSpec(heldout_size=10), steps=1, teacher_error=1.5)
