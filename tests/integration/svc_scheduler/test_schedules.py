"""The real Coordinator and lineage store under random schedules (real NATS and Postgres).

A seeded random "cluster" around the scheduler finishes samples in any order, hands back
partials when groups are aborted, scores groups, trains sealed batches (masking, as the trainer
does, every token older than η) and now and then restarts the scheduler. Whatever the order:
  - a group never starts beyond the admission bound (ρ × the groups still needed);
  - no token trained is staler than η, and with η = 0, ρ = 1 no token is ever masked or off-policy;
  - every group is trained at most once, every trained batch holds B groups, the run reaches the end;
  - with dynamic sampling, groups whose rewards are all equal are kept in lineage, never trained;
  - with Thompson prompt selection, every group's problem is from the pool and no two groups in
    flight share one;
  - an aborted partial is never lost: a resumed attempt starts from exactly what was handed back
    (unless `regenerate` dropped it as stale), also across restarts.
"""

import math
import random
import uuid

import pytest

from jetrl.config import RunSpec
from jetrl.ids import group_id
from jetrl.v1 import events_pb2 as ev
from svc_scheduler.active import prepare
from svc_scheduler.coordinator import Coordinator
from svc_scheduler.recorder import scored_state

B, G, STEPS = 2, 2, 4
POOL = 16  # Thompson selection's prompts: more than ever fly at once here


class Cluster:
    """Everything around the scheduler: rollout workers, reward stage and trainer, as lineage writes."""

    def __init__(self, rng, store, coordinator, run_id, eta, regenerate, dynamic):
        self.rng, self.store, self.coordinator, self.run_id, self.eta = rng, store, coordinator, run_id, eta
        self.regenerate, self.dynamic = regenerate, dynamic
        self.targets: dict[tuple[str, int], int] = {}  # (group, index) -> completion length
        self.work: dict[tuple[str, int, int], list[int]] = {}  # (group, index, attempt) -> token versions so far
        self.handed_back: dict[str, list[int]] = {}  # sample id -> versions of the prefix handed back

    async def version(self) -> int:
        return (await self.store.runs.get_run(self.run_id)).policy_version

    async def generate(self) -> None:
        """One decode step of a random generating group (its unfinished samples, one token each)."""
        generating = await self.store.groups.admitted_groups(self.run_id)
        if not generating:
            return
        n, attempt, _, _ = self.rng.choice(generating)
        gid = group_id(self.run_id, n)
        version, finished = await self.version(), []
        for i in await self.start_attempt(gid, attempt):
            tokens = self.work[(gid, i, attempt)]
            target = self.targets.setdefault((gid, i), self.rng.randint(1, 6))
            tokens.append(version)
            if len(tokens) >= target:
                finished.append(self.sample(gid, i, attempt, "eos"))
        await self.record(finished)

    async def start_attempt(self, gid: str, attempt: int) -> list[int]:
        """The samples this attempt generates; a worker's first look at it starts from the task's prefixes."""
        task = await self.coordinator.buffer.current(gid)  # what the published task carries
        indices = [p.index for p in task.prefixes] if attempt else list(range(G))
        for p in task.prefixes:
            if (gid, p.index, attempt) not in self.work:
                handed = self.handed_back.get(f"{gid}.{p.index}", [])
                # never lost: the prefix is what was handed back, or (regenerate) dropped as a whole
                assert list(p.token_versions) == handed or (self.regenerate and not p.token_versions)
                self.work[(gid, p.index, attempt)] = list(p.token_versions)  # token-in
        for i in indices:
            self.work.setdefault((gid, i, attempt), [])
        return indices

    def sample(self, gid, i, attempt, reason):
        versions = self.work[(gid, i, attempt)]
        return ev.Sample(
            run_id=self.run_id,
            group_id=gid,
            sample_id=f"{gid}.{i}",
            index=i,
            prompt_token_ids=[1],
            completion_token_ids=[3] * len(versions),
            logprobs=[-1.0] * len(versions),
            token_versions=versions,
            finish_reason=reason,
            worker_id="w",
            attempt=attempt,
        )

    async def hand_back(self) -> None:
        """Workers answer an abort: every unfinished sample of the aborted attempt, as it is."""
        store = self.store
        for gid, attempt in await self.aborted():
            finished = {s.index for s in (await store.samples.load_group(gid)).samples}
            partial = [
                self.sample(gid, i, attempt, "aborted")
                for i in await self.start_attempt(gid, attempt)
                if i not in finished
            ]
            for s in partial:
                self.handed_back[s.sample_id] = list(s.token_versions)
            await self.record(partial)

    async def aborted(self):
        from sqlalchemy import select

        from jetrl.lineage.models import PromptGroup

        async with self.store.engine.connect() as conn:
            return list(
                await conn.execute(
                    select(PromptGroup.group_id, PromptGroup.attempt).where(
                        PromptGroup.run_id == self.run_id, PromptGroup.state == "partial"
                    )
                )
            )

    async def record(self, samples) -> None:
        if not samples:
            return
        progress = await self.store.samples.record_samples([(s, "") for s in samples])
        for (gid, _), p in progress.items():
            if p.complete >= G and p.state in ("admitted", "partial"):
                await self.store.groups.mark_groups([gid], "generated")
        await self.coordinator.admit(self.run_id)

    async def score(self) -> None:
        counts = await self.store.groups.group_counts(self.run_id)
        if not counts["generated"]:
            return
        from sqlalchemy import select

        from jetrl.lineage.models import PromptGroup

        async with self.store.engine.connect() as conn:
            ids = (
                (
                    await conn.execute(
                        select(PromptGroup.group_id).where(
                            PromptGroup.run_id == self.run_id, PromptGroup.state == "generated"
                        )
                    )
                )
                .scalars()
                .all()
            )
        group = await self.store.samples.load_group(self.rng.choice(ids))
        # with dynamic sampling, some groups get rewards that are all equal (and are filtered)
        rewards = [float(self.rng.random() < 0.5) if self.dynamic else float(i % 2) for i in range(G)]
        scored = ev.ScoredGroup(group=group, rewards=rewards)
        await self.store.batches.record_scored(
            scored, "", scored_state(scored, dynamic_sampling=self.dynamic, drop_failed=False)
        )
        await self.coordinator.seal_batches(self.run_id)
        await self.coordinator.admit(self.run_id)

    async def train(self, trained: list) -> None:
        version = await self.version()
        batches = await self.store.batches.untrained_batches(self.run_id)
        if not batches:
            return
        batch = await self.store.batches.load_batch(batches[0])
        assert batch.step == version and len(batch.groups) == B
        advantages = []
        for scored in batch.groups:
            for s in scored.group.samples:
                # the trainer's rule: a token older than η versions is masked, never trained
                kept = [v for v in s.token_versions if version - v <= self.eta]
                trained.extend((version, v) for v in kept)
                advantages.append(
                    ev.SampleAdvantage(
                        sample_id=s.sample_id,
                        staleness=max((version - v for v in kept), default=0),
                        trained_tokens=len(kept),
                        stale_masked_tokens=len(s.token_versions) - len(kept),
                        offpolicy_tokens=sum(v < version for v in kept),
                    )
                )
        await self.store.versions.record_version(
            ev.WeightsAnnouncement(
                run_id=self.run_id,
                version=version + 1,
                parent_version=version,
                batch_id=batch.batch_id,
                uri="file:///x",
                sha256="0" * 64,
                advantages=advantages,
            ),
            "",
        )
        await self.coordinator.admit(self.run_id)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("eta", "rho", "stale", "dynamic", "selection"),
    [
        (0, 1.0, "mask", False, "uniform"),
        (2, 1.0, "mask", False, "uniform"),
        (0, 2.0, "mask", False, "uniform"),
        (1, 2.0, "regenerate", False, "uniform"),
        (1, 1.0, "mask", True, "uniform"),
        (1, 2.0, "mask", False, "thompson"),
    ],
)
async def test_random_schedules_keep_every_promise(
    js, lineage, untrained_model_dir, seed, eta, rho, stale, dynamic, selection
):
    rng = random.Random(seed)
    store, engine, model_dir = lineage, lineage.engine, untrained_model_dir
    spec = RunSpec.model_validate(
        {
            "model": {"path": str(model_dir)},
            "rollout": {"group_size": G, "max_new_tokens": 8},
            "train": {"steps": STEPS, "batch_groups": B, "dynamic_sampling": dynamic},
            "schedule": {
                "max_staleness": eta,
                "over_provision": rho,
                "stale_partials": stale,
                "eval_every": 0,
                "prompt_selection": selection,
                "prompt_pool": POOL,
            },
        }
    )
    run_id = f"r{uuid.uuid4().hex[:8]}"
    await store.runs.create_run(run_id, "t", "", STEPS, B, G, "")

    async def scheduler() -> Coordinator:
        c = Coordinator(js, store)
        admit = c.admit

        async def checked_admit(rid: str) -> int:
            started = await admit(rid)
            if started:  # what it just started stays within the bound: ρ × the groups still needed
                counts = await store.groups.group_counts(rid)
                accepted = counts["generated"] + counts["scored"] + counts["batched"] + counts["trained"]
                need = max(0, min(eta + await cluster.version() + 1, STEPS) * B - accepted)
                assert counts["admitted"] <= math.ceil(rho * need)
                if selection == "thompson":
                    in_flight = list((await store.groups.group_problems(rid)).values())
                    assert len(set(in_flight)) == len(in_flight) and all(0 <= p < POOL for p in in_flight)
                    assert len(in_flight) == counts["admitted"] + counts["partial"]  # every group got one
            return started

        c.admit = checked_admit
        await c.start(prepare(run_id, spec))
        return c

    cluster = Cluster(rng, store, None, run_id, eta, stale == "regenerate", dynamic)
    cluster.coordinator = await scheduler()
    trained: list[tuple[int, int]] = []
    for _ in range(2000):
        version = await cluster.version()
        if version >= STEPS:
            break
        action = rng.choices(["generate", "hand_back", "score", "train", "restart"], [8, 2, 3, 2, 0.3])[0]
        if action == "restart":  # a new scheduler: everything it knows comes from lineage
            cluster.coordinator = await scheduler()
        elif action == "train":
            await cluster.train(trained)
        else:
            await getattr(cluster, action)()
    assert await cluster.version() == STEPS, "the run did not reach its end"

    assert all(version - v <= eta for version, v in trained)
    assert len(trained) > 0
    stats = await store.reports.run_stats(run_id)
    assert stats.samples_trained == STEPS * B * G  # each trained once: B groups of G per version
    assert stats.max_staleness <= eta
    if dynamic:  # filtered groups are kept in lineage and never trained
        async with engine.connect() as conn:
            from sqlalchemy import func, select

            from jetrl.lineage.models import PromptGroup, Sample

            filtered = (
                await conn.execute(
                    select(func.count(Sample.trained_version))
                    .join(PromptGroup, PromptGroup.group_id == Sample.group_id)
                    .where(PromptGroup.run_id == run_id, PromptGroup.state == "filtered")
                )
            ).scalar()
        assert filtered == 0 and (await store.groups.group_counts(run_id))["filtered"] > 0
    if eta == 0 and rho == 1.0:
        assert stats.stale_masked_tokens == 0 and stats.offpolicy_token_share == 0.0
        assert (await store.groups.group_counts(run_id))["partial"] == 0
