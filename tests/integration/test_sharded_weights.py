"""A version bigger than train.weights_shard_mb: shards and an index from the trainer, to a rollout
engine through the shared files and through TrainerService's stream, and out again by export's path."""

import grpc
import pytest
import torch

from jetrl.localstack import free_port
from jetrl.policy import make_char_tokenizer, make_tiny_model
from jetrl.rpc_security import LOCAL, ServerSecurity
from jetrl.service import grpc_server
from jetrl.v1 import events_pb2
from jetrl.weights import INDEX_SUFFIX, WeightsUnavailable, fetch_version, file_sha256, version_files
from svc_rollout.api import GenRequest
from svc_rollout.engine import TorchEngine
from svc_rollout.weights import WeightSource, fetched_weights
from svc_trainer.checkpoint import save_weights, weights_path
from svc_trainer.server import TrainerServicer, register
from svc_trainer.worker import Trainer

TOK = make_char_tokenizer()
MB = 1 << 20


@pytest.fixture
def published(tmp_path):
    """Version 1 of run1: the demo-sized policy (1.8 MB in float32) in shards of at most 1 MiB."""
    model = make_tiny_model(TOK, seed=4).eval()
    index = save_weights(weights_path(tmp_path, "run1", 1), model, None, shard_bytes=MB)
    return model, index


@pytest.fixture
async def trainer_addr(tmp_path, published):
    server = grpc_server(ServerSecurity())
    register(TrainerServicer(Trainer(js=None, specs=None, data_dir=tmp_path, advertised_addr="")))(server)
    addr = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(addr)
    await server.start()
    yield addr
    await server.stop(None)


def announcement(index, uri: str, endpoint: str):
    return events_pb2.WeightsAnnouncement(
        run_id="run1", version=1, uri=uri, grpc_endpoint=endpoint, sha256=file_sha256(index), size_bytes=1
    )


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[n], sb[n]) for n in sa)


def test_a_big_version_is_shards_under_the_limit_and_an_index(published):
    model, index = published
    shards = version_files(index)
    assert index.name == "v000001" + INDEX_SUFFIX and len(shards) == 2
    assert all(s.stat().st_size <= MB for s in shards)
    engine = TorchEngine(make_tiny_model(TOK, seed=9).eval(), TOK)
    engine.load_weights(index, 1)
    assert same_weights(engine.model, model)


@pytest.mark.parametrize("path", ["file", "grpc"])
async def test_a_sharded_version_reaches_an_engine_by_either_path(published, trainer_addr, tmp_path, path):
    model, index = published
    uri = index.as_uri() if path == "file" else "file:///elsewhere/v000001.safetensors.index.json"
    engine = TorchEngine(make_tiny_model(TOK, seed=9).eval(), TOK)
    async with fetched_weights(announcement(index, uri, trainer_addr), WeightSource(tmp_path, trainer_addr)) as local:
        assert (local == index) == (path == "file")  # the shared files in place, or a spooled copy
        engine.load_weights(local, 1)
    assert same_weights(engine.model, model)
    [a] = engine.generate([GenRequest([1, 5, 6], 4, temperature=0.0)])
    [b] = TorchEngine(model, TOK).generate([GenRequest([1, 5, 6], 4, temperature=0.0)])
    assert a.token_ids == b.token_ids


async def test_a_shard_that_differs_from_its_index_is_refused(published, trainer_addr, tmp_path):
    _, index = published
    shard = version_files(index)[1]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")  # one byte changed after publication
    spool = tmp_path / "spool"
    spool.mkdir()
    with pytest.raises(WeightsUnavailable, match="differs from its index"):
        await fetch_version(trainer_addr, LOCAL, "run1", 1, spool)
    with pytest.raises(WeightsUnavailable, match="not the announced bytes"):  # the shared files are not used
        async with fetched_weights(announcement(index, index.as_uri(), ""), WeightSource(tmp_path, "")):
            pass


async def test_only_a_shard_the_index_lists_is_served(trainer_addr, tmp_path):
    from jetrl.weights import stream_weights

    with pytest.raises(grpc.aio.AioRpcError, match="is not a shard"):
        await stream_weights(trainer_addr, LOCAL, "run1", 1, tmp_path, file="trainer.pt")
    with pytest.raises(grpc.aio.AioRpcError, match="must be a bare file name") as err:
        await stream_weights(trainer_addr, LOCAL, "run1", 1, tmp_path, file="../../trainer.pt")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
