from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchRequest(_message.Message):
    __slots__ = ("queries", "dim", "k", "ef", "level_ef", "features", "categories", "category_k")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    LEVEL_EF_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_K_FIELD_NUMBER: _ClassVar[int]
    queries: bytes
    dim: int
    k: int
    ef: int
    level_ef: _containers.RepeatedScalarFieldContainer[int]
    features: _containers.MessageMap[str, Tensor]
    categories: _containers.RepeatedScalarFieldContainer[int]
    category_k: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, queries: _Optional[bytes] = ..., dim: _Optional[int] = ..., k: _Optional[int] = ..., ef: _Optional[int] = ..., level_ef: _Optional[_Iterable[int]] = ..., features: _Optional[_Mapping[str, Tensor]] = ..., categories: _Optional[_Iterable[int]] = ..., category_k: _Optional[_Iterable[int]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("num_queries", "k", "ids", "scores", "hops", "evaluations", "num_categories")
    NUM_QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    num_queries: int
    k: int
    ids: bytes
    scores: bytes
    hops: _containers.RepeatedScalarFieldContainer[int]
    evaluations: _containers.RepeatedScalarFieldContainer[int]
    num_categories: int
    def __init__(self, num_queries: _Optional[int] = ..., k: _Optional[int] = ..., ids: _Optional[bytes] = ..., scores: _Optional[bytes] = ..., hops: _Optional[_Iterable[int]] = ..., evaluations: _Optional[_Iterable[int]] = ..., num_categories: _Optional[int] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("ids", "embeddings", "dim", "versions", "categories")
    IDS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    embeddings: bytes
    dim: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    categories: _containers.RepeatedCompositeFieldContainer[CategoryList]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., embeddings: _Optional[bytes] = ..., dim: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ..., categories: _Optional[_Iterable[_Union[CategoryList, _Mapping]]] = ...) -> None: ...

class CategoryList(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("inserted", "refreshed", "skipped_stale")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    REFRESHED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_STALE_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    refreshed: int
    skipped_stale: int
    def __init__(self, inserted: _Optional[int] = ..., refreshed: _Optional[int] = ..., skipped_stale: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids", "versions")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., versions: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "unknown_ids", "skipped_stale")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_IDS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_STALE_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    unknown_ids: _containers.RepeatedScalarFieldContainer[int]
    skipped_stale: int
    def __init__(self, deleted: _Optional[int] = ..., unknown_ids: _Optional[_Iterable[int]] = ..., skipped_stale: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("dim", "found", "embeddings", "versions")
    DIM_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    dim: int
    found: _containers.RepeatedScalarFieldContainer[bool]
    embeddings: bytes
    versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dim: _Optional[int] = ..., found: _Optional[_Iterable[bool]] = ..., embeddings: _Optional[bytes] = ..., versions: _Optional[_Iterable[int]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("items", "dim", "metric", "memory_bytes", "counters")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    items: int
    dim: int
    metric: str
    memory_bytes: int
    counters: _containers.ScalarMap[str, float]
    def __init__(self, items: _Optional[int] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., counters: _Optional[_Mapping[str, float]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotProgress(_message.Message):
    __slots__ = ("bytes_written", "bytes_total", "done", "info")
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    bytes_written: int
    bytes_total: int
    done: bool
    info: SnapshotInfo
    def __init__(self, bytes_written: _Optional[int] = ..., bytes_total: _Optional[int] = ..., done: _Optional[bool] = ..., info: _Optional[_Union[SnapshotInfo, _Mapping]] = ...) -> None: ...

class SnapshotInfo(_message.Message):
    __slots__ = ("seq", "path", "items", "size_bytes", "pause_ms", "write_seconds", "kafka_offsets")
    class KafkaOffsetsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAUSE_MS_FIELD_NUMBER: _ClassVar[int]
    WRITE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KAFKA_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    path: str
    items: int
    size_bytes: int
    pause_ms: float
    write_seconds: float
    kafka_offsets: _containers.ScalarMap[int, int]
    def __init__(self, seq: _Optional[int] = ..., path: _Optional[str] = ..., items: _Optional[int] = ..., size_bytes: _Optional[int] = ..., pause_ms: _Optional[float] = ..., write_seconds: _Optional[float] = ..., kafka_offsets: _Optional[_Mapping[int, int]] = ...) -> None: ...

class SetCategoryParentsRequest(_message.Message):
    __slots__ = ("children", "parents")
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    children: _containers.RepeatedScalarFieldContainer[int]
    parents: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, children: _Optional[_Iterable[int]] = ..., parents: _Optional[_Iterable[int]] = ...) -> None: ...

class SetCategoryParentsResponse(_message.Message):
    __slots__ = ("items_moved",)
    ITEMS_MOVED_FIELD_NUMBER: _ClassVar[int]
    items_moved: int
    def __init__(self, items_moved: _Optional[int] = ...) -> None: ...

class CategoryParentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CategoryParentsResponse(_message.Message):
    __slots__ = ("children", "parents")
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    children: _containers.RepeatedScalarFieldContainer[int]
    parents: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, children: _Optional[_Iterable[int]] = ..., parents: _Optional[_Iterable[int]] = ...) -> None: ...
