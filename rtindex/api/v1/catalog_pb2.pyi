from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CatalogChange(_message.Message):
    __slots__ = ("op", "id", "version", "embedding", "categories", "producer_time_us")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[CatalogChange.Op]
        UPSERT: _ClassVar[CatalogChange.Op]
        DELETE: _ClassVar[CatalogChange.Op]
    OP_UNSPECIFIED: CatalogChange.Op
    UPSERT: CatalogChange.Op
    DELETE: CatalogChange.Op
    OP_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    op: CatalogChange.Op
    id: int
    version: int
    embedding: bytes
    categories: _containers.RepeatedScalarFieldContainer[int]
    producer_time_us: int
    def __init__(self, op: _Optional[_Union[CatalogChange.Op, str]] = ..., id: _Optional[int] = ..., version: _Optional[int] = ..., embedding: _Optional[bytes] = ..., categories: _Optional[_Iterable[int]] = ..., producer_time_us: _Optional[int] = ...) -> None: ...

class CategoryEdge(_message.Message):
    __slots__ = ("child", "parent", "producer_time_us")
    CHILD_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    child: int
    parent: int
    producer_time_us: int
    def __init__(self, child: _Optional[int] = ..., parent: _Optional[int] = ..., producer_time_us: _Optional[int] = ...) -> None: ...
