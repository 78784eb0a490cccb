from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUNNING: _ClassVar[RunState]
    COMPLETED: _ClassVar[RunState]
    STOPPED: _ClassVar[RunState]
    FAILED: _ClassVar[RunState]
RUN_STATE_UNSPECIFIED: RunState
RUNNING: RunState
COMPLETED: RunState
STOPPED: RunState
FAILED: RunState

class RunProgress(_message.Message):
    __slots__ = ("run_id", "state", "policy_version", "total_steps", "mean_reward", "heldout_accuracy", "heldout_version", "samples_per_second", "samples_generated", "samples_trained", "elapsed_seconds", "groups_running", "dead_letters", "message", "mean_staleness", "max_staleness", "partial_groups", "offpolicy_token_share", "stale_masked_tokens", "reward_failures", "groups_dropped", "groups_filtered", "teacher_version", "last_reward_error", "logprob_gap_mean", "logprob_gap_max", "entropy", "kl", "top_answer_share", "collapse_warning")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MEAN_REWARD_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_GENERATED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TRAINED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MEAN_STALENESS_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    OFFPOLICY_TOKEN_SHARE_FIELD_NUMBER: _ClassVar[int]
    STALE_MASKED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FAILURES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FILTERED_FIELD_NUMBER: _ClassVar[int]
    TEACHER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_REWARD_ERROR_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_GAP_MEAN_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_GAP_MAX_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    KL_FIELD_NUMBER: _ClassVar[int]
    TOP_ANSWER_SHARE_FIELD_NUMBER: _ClassVar[int]
    COLLAPSE_WARNING_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    policy_version: int
    total_steps: int
    mean_reward: float
    heldout_accuracy: float
    heldout_version: int
    samples_per_second: float
    samples_generated: int
    samples_trained: int
    elapsed_seconds: float
    groups_running: int
    dead_letters: int
    message: str
    mean_staleness: float
    max_staleness: int
    partial_groups: int
    offpolicy_token_share: float
    stale_masked_tokens: int
    reward_failures: int
    groups_dropped: int
    groups_filtered: int
    teacher_version: int
    last_reward_error: str
    logprob_gap_mean: float
    logprob_gap_max: float
    entropy: float
    kl: float
    top_answer_share: float
    collapse_warning: str
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., policy_version: _Optional[int] = ..., total_steps: _Optional[int] = ..., mean_reward: _Optional[float] = ..., heldout_accuracy: _Optional[float] = ..., heldout_version: _Optional[int] = ..., samples_per_second: _Optional[float] = ..., samples_generated: _Optional[int] = ..., samples_trained: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., groups_running: _Optional[int] = ..., dead_letters: _Optional[int] = ..., message: _Optional[str] = ..., mean_staleness: _Optional[float] = ..., max_staleness: _Optional[int] = ..., partial_groups: _Optional[int] = ..., offpolicy_token_share: _Optional[float] = ..., stale_masked_tokens: _Optional[int] = ..., reward_failures: _Optional[int] = ..., groups_dropped: _Optional[int] = ..., groups_filtered: _Optional[int] = ..., teacher_version: _Optional[int] = ..., last_reward_error: _Optional[str] = ..., logprob_gap_mean: _Optional[float] = ..., logprob_gap_max: _Optional[float] = ..., entropy: _Optional[float] = ..., kl: _Optional[float] = ..., top_answer_share: _Optional[float] = ..., collapse_warning: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "spec_yaml", "progress", "created_at")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    spec_yaml: str
    progress: RunProgress
    created_at: float
    def __init__(self, run_id: _Optional[str] = ..., spec_yaml: _Optional[str] = ..., progress: _Optional[_Union[RunProgress, _Mapping]] = ..., created_at: _Optional[float] = ...) -> None: ...

class CreateRunRequest(_message.Message):
    __slots__ = ("spec_yaml", "run_id")
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    spec_yaml: str
    run_id: str
    def __init__(self, spec_yaml: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("run_id", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetBatchDigestRequest(_message.Message):
    __slots__ = ("run_id", "batch_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    batch_id: str
    def __init__(self, run_id: _Optional[str] = ..., batch_id: _Optional[str] = ...) -> None: ...

class BatchDigest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("run_id", "min_version", "limit")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    min_version: int
    limit: int
    def __init__(self, run_id: _Optional[str] = ..., min_version: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("run_id", "version", "correct", "total", "accuracy")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    correct: int
    total: int
    accuracy: float
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ..., correct: _Optional[int] = ..., total: _Optional[int] = ..., accuracy: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("run_id", "prompts", "temperature", "top_p", "max_new_tokens", "seed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    prompts: _containers.RepeatedScalarFieldContainer[str]
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    def __init__(self, run_id: _Optional[str] = ..., prompts: _Optional[_Iterable[str]] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_new_tokens: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("version", "completions")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    version: int
    completions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[int] = ..., completions: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckRunRequest(_message.Message):
    __slots__ = ("spec_yaml",)
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    spec_yaml: str
    def __init__(self, spec_yaml: _Optional[str] = ...) -> None: ...

class CheckRunResponse(_message.Message):
    __slots__ = ("problems",)
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, problems: _Optional[_Iterable[str]] = ...) -> None: ...

class RolloutStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("worker_id", "loaded_versions", "samples_generated", "tokens_generated", "busy_seconds", "samples_aborted")
    class LoadedVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_GENERATED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_GENERATED_FIELD_NUMBER: _ClassVar[int]
    BUSY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_ABORTED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    loaded_versions: _containers.ScalarMap[str, int]
    samples_generated: int
    tokens_generated: int
    busy_seconds: float
    samples_aborted: int
    def __init__(self, worker_id: _Optional[str] = ..., loaded_versions: _Optional[_Mapping[str, int]] = ..., samples_generated: _Optional[int] = ..., tokens_generated: _Optional[int] = ..., busy_seconds: _Optional[float] = ..., samples_aborted: _Optional[int] = ...) -> None: ...

class TrainerStatusRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class TrainerStatus(_message.Message):
    __slots__ = ("run_id", "version", "samples_trained", "batches_trained", "checkpoint_dir")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TRAINED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_TRAINED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_DIR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    samples_trained: int
    batches_trained: int
    checkpoint_dir: str
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ..., samples_trained: _Optional[int] = ..., batches_trained: _Optional[int] = ..., checkpoint_dir: _Optional[str] = ...) -> None: ...

class FetchWeightsRequest(_message.Message):
    __slots__ = ("run_id", "version", "chunk_bytes", "teacher", "file")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    chunk_bytes: int
    teacher: bool
    file: str
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., teacher: _Optional[bool] = ..., file: _Optional[str] = ...) -> None: ...

class WeightsChunk(_message.Message):
    __slots__ = ("offset", "data", "total_bytes", "sha256", "name")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_bytes: int
    sha256: str
    name: str
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...
