from pathlib import Path

import pytest

from jetrl.config import RunSpec, Settings, SpecError, dump_spec, load_spec, parse_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_spec_loads(path, monkeypatch):
    monkeypatch.setenv("JETRL_DATA_DIR", "/data")
    spec = load_spec(path)
    assert isinstance(spec, RunSpec)
    assert "$" not in spec.model.path and "$" not in (spec.task.path or "")


def test_there_is_an_example():
    assert EXAMPLES, "examples/ must hold at least one run spec"


def test_spec_round_trips_with_defaults():
    spec = parse_spec("model: {path: /m}\n")
    assert parse_spec(dump_spec(spec)) == spec
    assert spec.rollout.group_size == 8 and spec.schedule.max_staleness == 0


@pytest.mark.parametrize(
    "text, needle",
    [
        ("model: {path: /m}\ntrain: {steps: 0}", "train.steps"),
        ("model: {path: /m}\nrollout: {top_p: 0}", "rollout.top_p"),
        ("model: {path: /m}\nbogus: 1", "bogus"),
        ("train: {steps: 3}", "model"),
        ("- a list", "mapping"),
        ("model: {path: /m", "YAML"),
        ("model: {path: /m}\ntask: {name: gsm8k}", "path"),
        ("model: {path: /m}\nschedule: {max_staleness: 2, over_provision: 2, recycled_staleness: 1}", "at least"),
        ("model: {path: /m}\nschedule: {recycled_staleness: 1}", "over_provision > 1"),
    ],
)
def test_bad_specs_say_what_is_wrong(text, needle):
    with pytest.raises(SpecError, match=needle):
        parse_spec(text)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("JETRL_NATS_URL", "nats://example:4222")
    monkeypatch.setenv("JETRL_TORCH_THREADS", "2")
    s = Settings()
    assert s.nats_url == "nats://example:4222" and s.torch_threads == 2
    assert s.listen_or(50051) == "127.0.0.1:50051"  # this host only unless told


def test_settings_reject_empty_addresses(monkeypatch):
    monkeypatch.setenv("JETRL_SCHEDULER_ADDR", "")
    with pytest.raises(ValueError):
        Settings()


def test_a_spec_path_expands_the_data_dir_and_refuses_any_other_variable_without_reading_it(monkeypatch):
    monkeypatch.setenv("JETRL_DATA_DIR", "/srv/jetrl")
    monkeypatch.setenv("JETRL_NATS_TOKEN", "s3cret-token")
    assert parse_spec("model: {path: $JETRL_DATA_DIR/models/m}").model.path == "/srv/jetrl/models/m"
    assert parse_spec("model: {path: '${JETRL_DATA_DIR}/m'}").model.path == "/srv/jetrl/m"
    for path in ("$JETRL_NATS_TOKEN", "/x/${JETRL_NATS_TOKEN}/y", "$HOME/m"):
        with pytest.raises(SpecError, match="may name only \\$JETRL_DATA_DIR") as err:
            parse_spec(f"model: {{path: '{path}'}}")
        assert "s3cret" not in str(err.value)
    with pytest.raises(SpecError, match="JETRL_NATS_TOKEN"):
        parse_spec("model: {path: /m}\ntask: {name: gsm8k, path: $JETRL_NATS_TOKEN}")
