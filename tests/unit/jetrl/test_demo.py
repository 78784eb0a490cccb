"""`jetrl demo` (jetrl/cli/demo.py): whatever happens after it starts bringing the stack up, it
brings it down again (unless asked to keep it running)."""

import pytest

import jetrl.cli.stack
from jetrl.cli.demo import demo
from jetrl.config import Settings
from jetrl.examples import DEMO_SPEC


class StackDidNotComeUp(RuntimeError):
    pass


def test_a_stack_that_fails_to_come_up_is_still_brought_down(monkeypatch, tmp_path):
    calls = []

    def up(settings):
        calls.append("up")
        raise StackDidNotComeUp("svc_rollout is not SERVING after 120 s")  # after starting some of it

    monkeypatch.setenv("JETRL_DATA_DIR", str(tmp_path))  # demo() exports it; restored after the test
    monkeypatch.setattr(jetrl.cli.stack, "up", up)
    monkeypatch.setattr(jetrl.cli.stack, "down", lambda settings: calls.append("down"))
    with pytest.raises(StackDidNotComeUp):
        demo(Settings(data_dir=tmp_path), DEMO_SPEC, keep_running=False)
    assert calls == ["up", "down"]


def test_a_seed_other_than_the_specs_gets_its_own_version_0_and_sampling():
    from jetrl.cli.demo import seeded
    from jetrl.config import parse_spec

    text = "seed: 0\nmodel: {path: /data/models/tiny-arith}\n"
    spec = parse_spec(text)
    assert seeded(spec, text, None) == (spec, text) == seeded(spec, text, 0)  # the spec's own
    third, third_yaml = seeded(spec, text, 3)
    assert (third.seed, third.model.path) == (3, "/data/models/tiny-arith-s3")
    assert parse_spec(third_yaml) == third  # what CreateRun gets is that spec
