from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LookupRequest(_message.Message):
    __slots__ = ("campaign", "user_ids")
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    campaign: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, campaign: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("table_version", "layer", "boosts", "buckets", "treatment", "known", "expired")
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    BOOSTS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    table_version: str
    layer: str
    boosts: _containers.RepeatedScalarFieldContainer[float]
    buckets: _containers.RepeatedScalarFieldContainer[int]
    treatment: _containers.RepeatedScalarFieldContainer[bool]
    known: _containers.RepeatedScalarFieldContainer[bool]
    expired: bool
    def __init__(self, table_version: _Optional[str] = ..., layer: _Optional[str] = ..., boosts: _Optional[_Iterable[float]] = ..., buckets: _Optional[_Iterable[int]] = ..., treatment: _Optional[_Iterable[bool]] = ..., known: _Optional[_Iterable[bool]] = ..., expired: bool = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("table_dir",)
    TABLE_DIR_FIELD_NUMBER: _ClassVar[int]
    table_dir: str
    def __init__(self, table_dir: _Optional[str] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("campaign", "table_version", "rows")
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    campaign: str
    table_version: str
    rows: int
    def __init__(self, campaign: _Optional[str] = ..., table_version: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TableStatus(_message.Message):
    __slots__ = ("campaign", "table_version", "rows", "expires_at", "loaded_at", "layer")
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    campaign: str
    table_version: str
    rows: int
    expires_at: str
    loaded_at: str
    layer: str
    def __init__(self, campaign: _Optional[str] = ..., table_version: _Optional[str] = ..., rows: _Optional[int] = ..., expires_at: _Optional[str] = ..., loaded_at: _Optional[str] = ..., layer: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("tables", "errors")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableStatus]
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tables: _Optional[_Iterable[_Union[TableStatus, _Mapping]]] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...
