from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RewardSample(_message.Message):
    __slots__ = ("sample_id", "text", "completion_token_ids")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    text: str
    completion_token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sample_id: _Optional[str] = ..., text: _Optional[str] = ..., completion_token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RewardView(_message.Message):
    __slots__ = ("view", "prompt", "samples")
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    view: str
    prompt: str
    samples: _containers.RepeatedCompositeFieldContainer[RewardSample]
    def __init__(self, view: _Optional[str] = ..., prompt: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[RewardSample, _Mapping]]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("contract_version", "run_id", "group_id", "policy_version", "reference", "views")
    CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    contract_version: int
    run_id: str
    group_id: str
    policy_version: int
    reference: str
    views: _containers.RepeatedCompositeFieldContainer[RewardView]
    def __init__(self, contract_version: _Optional[int] = ..., run_id: _Optional[str] = ..., group_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., reference: _Optional[str] = ..., views: _Optional[_Iterable[_Union[RewardView, _Mapping]]] = ...) -> None: ...

class SampleScore(_message.Message):
    __slots__ = ("sample_id", "reward", "extracted_answer", "pseudo_label", "step_scores", "detail")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    PSEUDO_LABEL_FIELD_NUMBER: _ClassVar[int]
    STEP_SCORES_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    reward: float
    extracted_answer: str
    pseudo_label: str
    step_scores: _containers.RepeatedScalarFieldContainer[float]
    detail: str
    def __init__(self, sample_id: _Optional[str] = ..., reward: _Optional[float] = ..., extracted_answer: _Optional[str] = ..., pseudo_label: _Optional[str] = ..., step_scores: _Optional[_Iterable[float]] = ..., detail: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("scores", "server")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[SampleScore]
    server: str
    def __init__(self, scores: _Optional[_Iterable[_Union[SampleScore, _Mapping]]] = ..., server: _Optional[str] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("name", "version", "contract_versions", "needs_reference", "needs_views", "needs_teacher_samples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    NEEDS_VIEWS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_TEACHER_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    contract_versions: _containers.RepeatedScalarFieldContainer[int]
    needs_reference: bool
    needs_views: bool
    needs_teacher_samples: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., contract_versions: _Optional[_Iterable[int]] = ..., needs_reference: _Optional[bool] = ..., needs_views: _Optional[bool] = ..., needs_teacher_samples: _Optional[bool] = ...) -> None: ...
