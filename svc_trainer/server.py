"""TrainerService: per-run status, the weights of any version as a gRPC stream, and whether it can
train a run before it starts. Every request field is checked first (jetrl/validate_rpc.py): a run
id becomes a directory name, so only one that is a single path component reaches a path."""

from __future__ import annotations

import asyncio

import grpc

from jetrl import validate_rpc as valid
from jetrl.config import RunSpec, SpecError, parse_spec
from jetrl.service import Register, registering
from jetrl.v1 import services_pb2, services_pb2_grpc
from jetrl.weights import file_sha256, version_files
from svc_trainer.checkpoint import load_state, published, run_dir, weights_path
from svc_trainer.teacher import teacher_path
from svc_trainer.worker import Trainer

DEFAULT_CHUNK = 1 << 20  # 1 MiB: large enough to amortise per-message cost, small for memory
MAX_CHUNK = 16 << 20  # well under the 64 MiB message limit (jetrl/rpc.py)


class TrainerServicer(services_pb2_grpc.TrainerServiceServicer):
    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    async def GetStatus(self, request, context: grpc.aio.ServicerContext):
        valid.run_id(request.run_id)
        rt = self.trainer.runs.get(request.run_id)
        state = rt.state if rt else await asyncio.to_thread(load_state, self.trainer.data_dir, request.run_id)
        if state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"the trainer has not trained run {request.run_id!r}")
        return services_pb2.TrainerStatus(
            run_id=request.run_id,
            version=state.version,
            samples_trained=state.samples_trained,
            batches_trained=state.batches_trained,
            checkpoint_dir=str(run_dir(self.trainer.data_dir, request.run_id)),
        )

    async def CheckRun(self, request, context: grpc.aio.ServicerContext):
        try:
            spec = parse_spec(valid.text(request.spec_yaml, "spec_yaml", valid.MAX_SPEC))
        except SpecError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        problems = await asyncio.to_thread(run_problems, spec, self.trainer.ranks)
        return services_pb2.CheckRunResponse(problems=problems)

    async def FetchWeights(self, request, context: grpc.aio.ServicerContext):
        valid.run_id(request.run_id)
        valid.integer(request.version, "version", 1, valid.MAX_VERSION)
        valid.integer(request.chunk_bytes, "chunk_bytes", 0, MAX_CHUNK)
        if request.file:
            valid.file_name(request.file, "file")
        where = teacher_path if request.teacher else weights_path
        path = published(where(self.trainer.data_dir, request.run_id, request.version))
        what = "teacher weights" if request.teacher else "weights"
        if not path.is_file():
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no {what} for {request.run_id} v{request.version}")
        if request.file:  # a shard: only a name the version's index lists (never a path elsewhere)
            if request.file not in {f.name for f in version_files(path)} - {path.name}:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"{request.file!r} is not a shard of {request.run_id} v{request.version}'s {what}",
                )
            path = path.parent / request.file
        # read in chunks, the checksum first: no copy of the whole file in memory
        digest = await asyncio.to_thread(file_sha256, path)
        step = request.chunk_bytes or DEFAULT_CHUNK
        total = path.stat().st_size
        with path.open("rb") as f:
            for offset in range(0, max(total, 1), step):
                data = await asyncio.to_thread(f.read, step)
                first = offset == 0
                yield services_pb2.WeightsChunk(
                    offset=offset,
                    data=data,
                    total_bytes=total,
                    sha256=digest if first else "",
                    name=path.name if first else "",
                )


def run_problems(spec: RunSpec, ranks: int) -> list[str]:
    """Why this trainer cannot train `spec`, each as what to change; empty when it can."""
    if spec.train.engine != "deepspeed" or spec.simulation is not None:
        return []  # the torch engine needs nothing the rollout check does not (the model directory)
    from svc_trainer.deepspeed_engine import deepspeed_problems

    return deepspeed_problems(spec, ranks or spec.train.deepspeed.ranks)


def register(servicer: TrainerServicer) -> Register:
    return registering(
        services_pb2_grpc.add_TrainerServiceServicer_to_server,
        servicer,
        services_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name,
    )
