"""The scheduler's per-version training metrics (svc_scheduler/run_metrics.py), read back the way
users read them: TensorBoard's own reader (EventAccumulator) and the W&B offline run directory."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from jetrl.config import RunSpec, parse_spec
from jetrl.lineage.reports import VersionPoint
from svc_scheduler.run_metrics import STEP, TENSORBOARD_DIR, WANDB_DIR, RunMetrics, Tag

RUN = "arith-abc123"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
POINTS = [
    VersionPoint(1, T0, 32, {"loss": 0.5, "kl": 0.01}, 0.25, 0.0, 0),
    VersionPoint(2, T0 + timedelta(seconds=4), 64, {"loss": 0.4, "kl": 0.02}, 0.5, 0.5, 1),
    VersionPoint(3, T0 + timedelta(seconds=12), 96, {"loss": 0.3, "kl": 0.03}, None, None, None),
]


def _spec(metrics: str = "") -> RunSpec:
    return parse_spec(f"model: {{path: /models/tiny}}\n{metrics}")


def _writer(tmp_path: Path) -> RunMetrics:
    return RunMetrics(tmp_path)


async def _write_run(metrics: RunMetrics, spec: RunSpec) -> None:
    for point in POINTS:  # each with the version before, as the recorder reads them
        await metrics.on_version(RUN, spec, point.version, [p for p in POINTS if p.version >= point.version - 1])
    await metrics.on_evaluation(RUN, spec, 0, 0.1)
    await metrics.on_evaluation(RUN, spec, 2, 0.6)  # late: after version 3 was written
    metrics.close(RUN)


async def test_tensorboard_reads_one_point_per_version_for_each_metric(tmp_path):
    await _write_run(_writer(tmp_path), _spec())

    acc = EventAccumulator(str(tmp_path / TENSORBOARD_DIR / RUN))
    acc.Reload()

    def points(tag: str) -> list[tuple[int, float]]:
        return [(e.step, pytest.approx(e.value)) for e in acc.Scalars(tag)]

    assert points("train/loss") == [(1, 0.5), (2, 0.4), (3, 0.3)]
    assert points("train/kl") == [(1, 0.01), (2, 0.02), (3, 0.03)]
    assert points(Tag.SAMPLES_TRAINED) == [(1, 32), (2, 64), (3, 96)]
    # samples/s from the version before: 32 in 4 s, then 32 in 8 s
    assert points(Tag.SAMPLES_PER_S) == [(2, 8.0), (3, 4.0)]
    # version 3's samples are not in lineage yet: no point rather than a made-up one
    assert points(Tag.REWARD) == [(1, 0.25), (2, 0.5)]
    assert points(Tag.STALENESS_MEAN) == [(1, 0.0), (2, 0.5)]
    assert points(Tag.STALENESS_MAX) == [(1, 0), (2, 1)]
    assert points(Tag.ACCURACY) == [(0, 0.1), (2, 0.6)]
    assert [e.wall_time for e in acc.Scalars("train/loss")] == [p.created_at.timestamp() for p in POINTS]


async def test_nothing_is_written_when_the_run_turns_it_off(tmp_path):
    await _write_run(_writer(tmp_path), _spec("metrics: {tensorboard: false}"))
    assert not (tmp_path / TENSORBOARD_DIR).exists()


async def test_an_unwritable_data_dir_is_logged_and_the_run_goes_on(tmp_path, caplog):
    (tmp_path / TENSORBOARD_DIR).write_text("a file where the directory should be")
    await _write_run(_writer(tmp_path), _spec())
    assert "cannot open a metrics destination" in caplog.text


def _wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a `.wandb` file: a 7-byte header, then LevelDB's log format (32 KiB
    blocks of chunks: crc32c, length, type FULL/FIRST/MIDDLE/LAST, data; a block's tail under
    7 bytes is padding); a chunk not yet written whole ends the list."""
    data, pos, chunk, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):
            break  # a chunk still being written
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


async def _finished_records(path: Path, timeout_s: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The file's records once W&B's writer has written its `exit` record. `run.finish()` returns
    when the exit is acknowledged, but wandb-core flushes the file a little later: on a loaded
    machine CI read the header alone (no `run` record) right after finish."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not any(r.WhichOneof("record_type") == "exit" for r in _wandb_records(path)):
        assert asyncio.get_running_loop().time() < deadline, f"no exit record in {path} after {timeout_s} s"
        await asyncio.sleep(0.1)
    return _wandb_records(path)


async def test_wandb_offline_writes_a_run_directory_with_every_point(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DISABLED", "false")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    spec = _spec("metrics: {tensorboard: false, wandb: {project: jetrl-test, mode: offline}}")
    await _write_run(_writer(tmp_path), spec)

    [run_file] = (tmp_path / WANDB_DIR / "wandb").glob(f"offline-run-*-{RUN}/run-{RUN}.wandb")
    records = await _finished_records(run_file)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == RUN and run.project == "jetrl-test"
    history = [
        {item.key or ".".join(item.nested_key): float(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    loss = [(h[STEP], h["train/loss"]) for h in history if "train/loss" in h]
    accuracy = [(h[STEP], h[Tag.ACCURACY]) for h in history if Tag.ACCURACY in h]
    assert loss == [(1, 0.5), (2, 0.4), (3, 0.3)]
    assert accuracy == [(0, 0.1), (2, 0.6)]  # the late evaluation kept: the x axis is the version
