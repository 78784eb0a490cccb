from jetrl.v1 import reward_pb2 as _reward_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "max_new_tokens", "seed")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_new_tokens: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class Prefix(_message.Message):
    __slots__ = ("index", "token_ids", "logprobs", "token_versions")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    index: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    token_versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., token_versions: _Optional[_Iterable[int]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("run_id", "group_id", "prompt_id", "prompt", "prompt_token_ids", "num_samples", "policy_version", "step", "sampling", "view", "attempt", "resume", "first_index")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    group_id: str
    prompt_id: str
    prompt: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    num_samples: int
    policy_version: int
    step: int
    sampling: SamplingParams
    view: str
    attempt: int
    resume: _containers.RepeatedCompositeFieldContainer[Prefix]
    first_index: int
    def __init__(self, run_id: _Optional[str] = ..., group_id: _Optional[str] = ..., prompt_id: _Optional[str] = ..., prompt: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., num_samples: _Optional[int] = ..., policy_version: _Optional[int] = ..., step: _Optional[int] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., view: _Optional[str] = ..., attempt: _Optional[int] = ..., resume: _Optional[_Iterable[_Union[Prefix, _Mapping]]] = ..., first_index: _Optional[int] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("run_id", "group_id", "sample_id", "index", "prompt_token_ids", "completion_token_ids", "logprobs", "token_versions", "text", "finish_reason", "worker_id", "temperature", "attempt", "prefix_len", "view")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    group_id: str
    sample_id: str
    index: int
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    completion_token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    token_versions: _containers.RepeatedScalarFieldContainer[int]
    text: str
    finish_reason: str
    worker_id: str
    temperature: float
    attempt: int
    prefix_len: int
    view: str
    def __init__(self, run_id: _Optional[str] = ..., group_id: _Optional[str] = ..., sample_id: _Optional[str] = ..., index: _Optional[int] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., completion_token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., token_versions: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ..., finish_reason: _Optional[str] = ..., worker_id: _Optional[str] = ..., temperature: _Optional[float] = ..., attempt: _Optional[int] = ..., prefix_len: _Optional[int] = ..., view: _Optional[str] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("run_id", "group_id", "attempt", "view", "samples")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    group_id: str
    attempt: int
    view: str
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, run_id: _Optional[str] = ..., group_id: _Optional[str] = ..., attempt: _Optional[int] = ..., view: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class ViewPrompt(_message.Message):
    __slots__ = ("view", "prompt", "first_index", "size", "trained")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    view: str
    prompt: str
    first_index: int
    size: int
    trained: bool
    def __init__(self, view: _Optional[str] = ..., prompt: _Optional[str] = ..., first_index: _Optional[int] = ..., size: _Optional[int] = ..., trained: _Optional[bool] = ...) -> None: ...

class PromptGroup(_message.Message):
    __slots__ = ("run_id", "group_id", "prompt_id", "prompt", "reference", "step", "policy_version", "samples", "views")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    group_id: str
    prompt_id: str
    prompt: str
    reference: str
    step: int
    policy_version: int
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    views: _containers.RepeatedCompositeFieldContainer[ViewPrompt]
    def __init__(self, run_id: _Optional[str] = ..., group_id: _Optional[str] = ..., prompt_id: _Optional[str] = ..., prompt: _Optional[str] = ..., reference: _Optional[str] = ..., step: _Optional[int] = ..., policy_version: _Optional[int] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., views: _Optional[_Iterable[_Union[ViewPrompt, _Mapping]]] = ...) -> None: ...

class ScoredGroup(_message.Message):
    __slots__ = ("group", "rewards", "details", "reward_server", "reward_endpoint", "calls")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    REWARD_SERVER_FIELD_NUMBER: _ClassVar[int]
    REWARD_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    group: PromptGroup
    rewards: _containers.RepeatedScalarFieldContainer[float]
    details: _containers.RepeatedCompositeFieldContainer[_reward_pb2.SampleScore]
    reward_server: str
    reward_endpoint: str
    calls: _containers.RepeatedCompositeFieldContainer[RewardCall]
    def __init__(self, group: _Optional[_Union[PromptGroup, _Mapping]] = ..., rewards: _Optional[_Iterable[float]] = ..., details: _Optional[_Iterable[_Union[_reward_pb2.SampleScore, _Mapping]]] = ..., reward_server: _Optional[str] = ..., reward_endpoint: _Optional[str] = ..., calls: _Optional[_Iterable[_Union[RewardCall, _Mapping]]] = ...) -> None: ...

class RewardCall(_message.Message):
    __slots__ = ("endpoint", "server", "weight", "ok", "error", "attempts", "rewards")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    server: str
    weight: float
    ok: bool
    error: str
    attempts: int
    rewards: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, endpoint: _Optional[str] = ..., server: _Optional[str] = ..., weight: _Optional[float] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., rewards: _Optional[_Iterable[float]] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("run_id", "batch_id", "step", "policy_version", "groups")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    batch_id: str
    step: int
    policy_version: int
    groups: _containers.RepeatedCompositeFieldContainer[ScoredGroup]
    def __init__(self, run_id: _Optional[str] = ..., batch_id: _Optional[str] = ..., step: _Optional[int] = ..., policy_version: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[ScoredGroup, _Mapping]]] = ...) -> None: ...

class SampleAdvantage(_message.Message):
    __slots__ = ("sample_id", "reward", "advantage", "staleness", "trained_tokens", "stale_masked_tokens", "offpolicy_tokens")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_FIELD_NUMBER: _ClassVar[int]
    STALENESS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STALE_MASKED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OFFPOLICY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    reward: float
    advantage: float
    staleness: int
    trained_tokens: int
    stale_masked_tokens: int
    offpolicy_tokens: int
    def __init__(self, sample_id: _Optional[str] = ..., reward: _Optional[float] = ..., advantage: _Optional[float] = ..., staleness: _Optional[int] = ..., trained_tokens: _Optional[int] = ..., stale_masked_tokens: _Optional[int] = ..., offpolicy_tokens: _Optional[int] = ...) -> None: ...

class WeightsAnnouncement(_message.Message):
    __slots__ = ("run_id", "version", "parent_version", "batch_id", "uri", "grpc_endpoint", "size_bytes", "sha256", "format", "metrics", "advantages", "samples_trained_total")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    GRPC_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TRAINED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    parent_version: int
    batch_id: str
    uri: str
    grpc_endpoint: str
    size_bytes: int
    sha256: str
    format: str
    metrics: _containers.ScalarMap[str, float]
    advantages: _containers.RepeatedCompositeFieldContainer[SampleAdvantage]
    samples_trained_total: int
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ..., parent_version: _Optional[int] = ..., batch_id: _Optional[str] = ..., uri: _Optional[str] = ..., grpc_endpoint: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., format: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., advantages: _Optional[_Iterable[_Union[SampleAdvantage, _Mapping]]] = ..., samples_trained_total: _Optional[int] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("run_id", "kind", "reason", "aborted")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Control.Kind]
        STOP: _ClassVar[Control.Kind]
        COMPLETED: _ClassVar[Control.Kind]
        ABORT: _ClassVar[Control.Kind]
    KIND_UNSPECIFIED: Control.Kind
    STOP: Control.Kind
    COMPLETED: Control.Kind
    ABORT: Control.Kind
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    kind: Control.Kind
    reason: str
    aborted: _containers.RepeatedCompositeFieldContainer[TaskRef]
    def __init__(self, run_id: _Optional[str] = ..., kind: _Optional[_Union[Control.Kind, str]] = ..., reason: _Optional[str] = ..., aborted: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ...) -> None: ...

class TaskRef(_message.Message):
    __slots__ = ("group_id", "attempt")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    group_id: str
    attempt: int
    def __init__(self, group_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class EvalRequest(_message.Message):
    __slots__ = ("run_id", "min_version")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    min_version: int
    def __init__(self, run_id: _Optional[str] = ..., min_version: _Optional[int] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("run_id", "version", "requested", "correct", "total", "worker_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    requested: int
    correct: int
    total: int
    worker_id: str
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ..., requested: _Optional[int] = ..., correct: _Optional[int] = ..., total: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...
