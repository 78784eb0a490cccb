"""Weights from svc_trainer to svc_rollout: the shared file first, else TrainerService's stream."""

import hashlib

import grpc
import pytest

from jetrl.localstack import free_port
from jetrl.rpc_security import LOCAL, ServerSecurity
from jetrl.service import grpc_server
from jetrl.v1 import events_pb2, services_pb2, services_pb2_grpc
from jetrl.weights import stream_weights
from svc_rollout.weights import WeightSource, WeightsUnavailable, fetched_weights
from svc_trainer.checkpoint import TrainerState, atomic_write, load_state, save_state, weights_path
from svc_trainer.server import TrainerServicer, register
from svc_trainer.worker import Trainer

BLOB = bytes(range(256)) * 5000  # 1.28 MB: several chunks


@pytest.fixture
async def trainer_addr(tmp_path):
    trainer = Trainer(js=None, specs=None, data_dir=tmp_path, advertised_addr="")
    atomic_write(weights_path(tmp_path, "run1", 1), BLOB)
    server = grpc_server(ServerSecurity())
    register(TrainerServicer(trainer))(server)
    addr = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(addr)
    await server.start()
    yield addr
    await server.stop(None)


def announcement(uri: str, endpoint: str, sha: str = hashlib.sha256(BLOB).hexdigest()):
    return events_pb2.WeightsAnnouncement(
        run_id="run1", version=1, uri=uri, grpc_endpoint=endpoint, sha256=sha, size_bytes=len(BLOB)
    )


async def fetched(ann, data_dir, teacher=False) -> bytes:
    """The announced bytes as a worker with `data_dir` and the announcement's trainer fetches them."""
    async with fetched_weights(ann, WeightSource(data_dir, ann.grpc_endpoint), teacher) as path:
        return path.read_bytes()


async def test_the_shared_file_is_used_in_place_when_it_is_there(tmp_path):
    path = weights_path(tmp_path, "run1", 1)
    atomic_write(path, BLOB)
    async with fetched_weights(announcement(path.as_uri(), ""), WeightSource(tmp_path, "")) as local:
        assert local == path  # no copy


async def test_an_announcement_cannot_point_the_worker_elsewhere(tmp_path, trainer_addr):
    """A forged announcement pointing at a zeroed copy with its own correct sha256 was loaded and
    trained on: files are used only inside the worker's data directory, streams only from its own
    trainer address."""
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere" / "v1.safetensors"
    atomic_write(outside, BLOB)
    with pytest.raises(WeightsUnavailable, match="no trainer address"):
        async with fetched_weights(announcement(outside.as_uri(), ""), WeightSource(tmp_path / "data", "")):
            pass
    # the announcement names a server of its own: the worker streams from its trainer all the same
    forged = announcement(outside.as_uri(), "127.0.0.1:1")
    async with fetched_weights(forged, WeightSource(tmp_path / "data", trainer_addr)) as local:
        assert local != outside and local.read_bytes() == BLOB


async def test_a_streamed_copy_is_removed_after_use(tmp_path, trainer_addr):
    elsewhere = announcement("file:///elsewhere/v1.safetensors", trainer_addr)
    async with fetched_weights(elsewhere, WeightSource(tmp_path, trainer_addr)) as local:
        assert local.read_bytes() == BLOB
    assert not local.exists()


async def test_an_unreadable_file_falls_back_to_the_trainer_stream(trainer_addr, tmp_path):
    assert await fetched(announcement("file:///elsewhere/v1.safetensors", trainer_addr), tmp_path) == BLOB
    streamed, sha256 = await stream_weights(trainer_addr, LOCAL, "run1", 1, tmp_path, chunk_bytes=4096)
    assert streamed == tmp_path / "v000001.safetensors" and streamed.read_bytes() == BLOB
    assert sha256 == hashlib.sha256(BLOB).hexdigest()


async def test_the_teacher_stream_is_served_from_its_own_files(tmp_path, trainer_addr):
    from svc_trainer.teacher import teacher_path

    teacher = BLOB[::-1]
    atomic_write(teacher_path(tmp_path, "run1", 1), teacher)
    ann = events_pb2.WeightsAnnouncement(
        run_id="run1",
        version=1,
        uri="file:///elsewhere",
        grpc_endpoint=trainer_addr,
        sha256=hashlib.sha256(teacher).hexdigest(),
        size_bytes=len(teacher),
    )
    assert await fetched(ann, tmp_path, teacher=True) == teacher  # not the policy's v1
    with pytest.raises(grpc.aio.AioRpcError, match="no teacher weights for run1 v2"):
        await stream_weights(trainer_addr, LOCAL, "run1", 2, tmp_path, teacher=True)


async def test_bytes_that_fail_the_checksum_are_refused(tmp_path, trainer_addr):
    path = weights_path(tmp_path, "run1", 1)
    atomic_write(path, BLOB)
    with pytest.raises(WeightsUnavailable, match="differ from the announcement"):
        await fetched(announcement(path.as_uri(), trainer_addr, sha="0" * 64), tmp_path)
    with pytest.raises(WeightsUnavailable, match="no trainer address"):
        await fetched(announcement("file:///nowhere", ""), tmp_path)


async def test_missing_versions_and_bad_requests_are_refused(trainer_addr):
    async with grpc.aio.insecure_channel(trainer_addr) as ch:
        stub = services_pb2_grpc.TrainerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.FetchWeights(services_pb2.FetchWeightsRequest(run_id="run1", version=7)):
                pass
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.FetchWeights(services_pb2.FetchWeightsRequest(run_id="run1", version=0)):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetStatus(services_pb2.TrainerStatusRequest(run_id="never"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_trainer_state_survives_a_restart(tmp_path):
    state = TrainerState(
        version=3,
        samples_trained=96,
        batches_trained=3,
        trained_batches=["r.b0", "r.b1", "r.b2"],
        announcement=b"\x08\x03",
    )
    save_state(tmp_path, "r", state)
    assert load_state(tmp_path, "r") == state
    assert load_state(tmp_path, "other") is None
    assert not list(tmp_path.rglob("*.tmp"))  # written under a temporary name, then renamed


@pytest.mark.parametrize("run_id", ["/tmp/elsewhere", "../run1", "a.b", ""])
async def test_a_run_id_that_is_a_path_is_refused(trainer_addr, run_id):
    """GetStatus used to load `<data>/<run_id>/trainer.pt` for any run_id, an absolute directory
    included (and unpickle what it found there)."""
    async with grpc.aio.insecure_channel(trainer_addr) as ch:
        stub = services_pb2_grpc.TrainerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetStatus(services_pb2.TrainerStatusRequest(run_id=run_id))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "run_id" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.FetchWeights(services_pb2.FetchWeightsRequest(run_id=run_id, version=1)):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_version_changed_on_disk_fails_its_tasks_and_is_never_waited_out(tmp_path, trainer_addr):
    """The shared file and the trainer's stream both hold other bytes than the announced ones: the
    fetch fails as the event's fault (counted, then dead-lettered, and the run fails with the
    reason), never as an outage waited out for ever (the stall issue 14 found)."""
    from jetrl.bus.retry import is_transient

    path = weights_path(tmp_path, "run1", 1)
    announced = announcement(path.as_uri(), trainer_addr)
    atomic_write(path, BLOB[:-1] + b"\0")  # changed after the announcement
    with pytest.raises(WeightsUnavailable, match="differ from the announcement") as err:
        await fetched(announced, tmp_path)
    assert not is_transient(err.value)
