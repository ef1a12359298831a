"""The `aerogrid` API that connectors program against.

A connector module creates one `App`, declares its topics, grids, streams and timers, and the
platform runs it: records arrive in batches from the runtime node, grid changes go back to it.
Nothing here talks to Kafka or the network; the connector process's driver (`_driver`) feeds
streams and collects grid changes.
"""

from __future__ import annotations

import datetime as _datetime
import decimal as _decimal
import math
import types
import typing
from typing import Any, Callable, Iterator, Optional

__all__ = [
    "App",
    "Grid",
    "Record",
    "RecordError",
    "Stream",
    "Topic",
]

# The platform's broker; `App(broker=...)` is accepted and ignored.
BROKER_URI = "aerogrid://platform"
# What `@app.timer` takes: at least a millisecond, at most a year (the node refuses the rest too).
MIN_TIMER_SECONDS = 0.001
MAX_TIMER_SECONDS = 365 * 24 * 3600

# JSON scalars a grid cell may hold.
_SCALARS = (str, int, float, bool, type(None))
_MIN_INT = -(2**63)
_MAX_INT = 2**63 - 1


class RecordError(ValueError):
    """A message that does not fit its Record: it becomes a bad record with this reason."""


# ---------------------------------------------------------------------------------------------
# Records


class Record:
    """A typed message value, declared with annotations:

        class Order(aerogrid.Record):
            product: str
            quantity: int = 1

    Fields are str, int, float, bool, Optional[...], list[...], dict, or nested Records.
    JSON values are coerced where it is lossless (`"3"` to int 3, `1` to float 1.0).
    """

    __aerogrid_fields__: dict[str, tuple[Any, Any]] = {}
    __slots__ = ("__dict__",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls)
        fields: dict[str, tuple[Any, Any]] = {}
        for name, annotation in hints.items():
            if name.startswith("_"):
                continue
            default = cls.__dict__.get(name, _MISSING)
            fields[name] = (annotation, default)
        cls.__aerogrid_fields__ = fields

    def __init__(self, **values: Any) -> None:
        self._fill(values, "")

    def _fill(self, values: dict[str, Any], prefix: str) -> None:
        for name, (annotation, default) in self.__aerogrid_fields__.items():
            if name in values:
                value = _coerce(values[name], annotation, prefix + name)
            elif default is not _MISSING:
                # A fresh copy of mutable defaults, so records never share a list.
                value = default.copy() if isinstance(default, (list, dict)) else default
            elif _is_optional(annotation):
                value = None
            else:
                raise RecordError(f"missing field `{prefix}{name}`")
            object.__setattr__(self, name, value)
        # Unknown keys are ignored: producers add fields over time.

    @classmethod
    def from_json(cls, value: Any) -> "Record":
        if not isinstance(value, dict):
            raise RecordError(f"expected a JSON object for {cls.__name__}, got {_json_type(value)}")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return {name: _to_plain(getattr(self, name)) for name in self.__aerogrid_fields__}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__aerogrid_fields__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation) and _union_origin(annotation)


def _union_origin(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is typing.Union or origin is types.UnionType


def _json_type(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


_PLAIN_TYPES = frozenset((str, int, float, bool))


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    """Converts a decoded JSON value to `annotation`, or raises RecordError naming `path`."""
    if type(value) is annotation and annotation in _PLAIN_TYPES:
        return value
    if annotation is Any or annotation is object:
        return value
    if _union_origin(annotation):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise RecordError(f"field `{path}` is null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except RecordError as error:
                errors.append(str(error))
        raise RecordError(errors[0] if len(errors) == 1 else f"field `{path}`: {'; '.join(errors)}")
    if value is None:
        raise RecordError(f"field `{path}` is null")
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, list):
            raise RecordError(f"field `{path}` should be a list, got {_json_type(value)}")
        return [_coerce(item, item_type, f"{path}[{index}]") for index, item in enumerate(value)]
    if annotation is list:
        if not isinstance(value, list):
            raise RecordError(f"field `{path}` should be a list, got {_json_type(value)}")
        return value
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise RecordError(f"field `{path}` should be an object, got {_json_type(value)}")
        return value
    if isinstance(annotation, type) and issubclass(annotation, Record):
        if not isinstance(value, dict):
            raise RecordError(f"field `{path}` should be an object, got {_json_type(value)}")
        record = annotation.__new__(annotation)
        record._fill(value, f"{path}.")
        return record
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise RecordError(f"field `{path}` should be a boolean, got {_json_type(value)}")
    if annotation is int:
        if isinstance(value, bool):
            raise RecordError(f"field `{path}` should be an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise RecordError(f"field `{path}` should be an integer, got {_describe(value)}")
    if annotation is float:
        if isinstance(value, bool):
            raise RecordError(f"field `{path}` should be a number, got a boolean")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise RecordError(f"field `{path}` should be a number, got {_describe(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise RecordError(f"field `{path}` should be a string, got {_json_type(value)}")
    if annotation is _datetime.datetime:
        return _datetime_of(value, path)
    if annotation is _datetime.date:
        try:
            if isinstance(value, str) and len(value) == 10:
                return _datetime.date.fromisoformat(value)
        except ValueError:
            pass
        raise RecordError(f"field `{path}` should be a date (YYYY-MM-DD), got {_describe(value)}")
    if annotation is _decimal.Decimal:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            try:
                number = _decimal.Decimal(value.strip() if isinstance(value, str) else repr(value))
                if number.is_finite():
                    return number
            except _decimal.InvalidOperation:
                pass
        raise RecordError(f"field `{path}` should be a decimal number, got {_describe(value)}")
    raise RecordError(f"field `{path}` has an unsupported type {annotation!r}")


def _datetime_of(value: Any, path: str) -> _datetime.datetime:
    """ISO 8601 text (`Z` or an offset; none is UTC) as an aware datetime in UTC."""
    if isinstance(value, str):
        try:
            moment = _datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and "T" in value.upper():
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=_datetime.timezone.utc)
            return moment.astimezone(_datetime.timezone.utc)
    raise RecordError(f"field `{path}` should be a date and time (ISO 8601), got {_describe(value)}")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{_json_type(value)} {text}"


def _to_plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_to_plain(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# Topics


_KEY_TYPES = (str, bytes, int, type(None))
# How a topic's keys or values are written: JSON (the default), Avro, Protobuf or JSON Schema in
# the Confluent wire format (a zero byte, a 4-byte schema id, the payload; the schema from the
# registry), the bytes as they are, or UTF-8 text.
SERIALIZERS = ("json", "avro", "protobuf", "json-schema", "raw", "str")


class Topic:
    """A Kafka topic an app reads, with how its keys and values decode.

    Keys: str (UTF-8), bytes (raw), int (decimal text) or None (ignored).
    Values: a Record or dict (a JSON object), str (UTF-8 text), bytes (raw), int or float (JSON
    number).
    Serializers say how they are written (`SERIALIZERS`): `'json'` by default; `'avro'`,
    `'protobuf'` and `'json-schema'` with a schema registry; `'raw'` (bytes) and `'str'` (text).
    """

    def __init__(
        self,
        app: "App",
        name: str,
        key_type: Any,
        value_type: Any,
        key_serializer: str = "json",
        value_serializer: str = "json",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("a topic name is a non-empty string")
        for which, serializer in (("key", key_serializer), ("value", value_serializer)):
            if serializer not in SERIALIZERS:
                raise ValueError(
                    f"{which}_serializer of topic `{name}` is one of {', '.join(map(repr, SERIALIZERS))}, not {serializer!r}"
                )
        # `raw` and `str` say the type: the default type follows them, another one is a mistake.
        for which, serializer, plain in (("key", key_serializer, key_type), ("value", value_serializer, value_type)):
            wanted = {"raw": bytes, "str": str}.get(serializer)
            default = str if which == "key" else dict
            if wanted is not None and plain not in (wanted, default):
                raise TypeError(
                    f"{which}_serializer={serializer!r} of topic `{name}` gives {wanted.__name__}, but {which}_type is {plain!r}"
                )
        if key_serializer in ("raw", "str"):
            key_type = bytes if key_serializer == "raw" else str
        if value_serializer in ("raw", "str"):
            value_type = bytes if value_serializer == "raw" else str
        if key_type is None:
            key_type = type(None)
        if key_type not in _KEY_TYPES:
            raise TypeError(f"key_type of topic `{name}` must be str, bytes, int or None, not {key_type!r}")
        if not (value_type in (dict, str, bytes, int, float) or _is_record_type(value_type)):
            raise TypeError(
                f"value_type of topic `{name}` must be a Record class, dict, str, bytes, int or float, not {value_type!r}"
            )
        self.app = app
        self.name = name
        self.key_type = key_type
        self.value_type = value_type
        self.key_serializer = key_serializer
        self.value_serializer = value_serializer

    def __repr__(self) -> str:
        return f"<aerogrid.Topic {self.name!r}>"


def _is_record_type(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, Record) and value is not Record


# ---------------------------------------------------------------------------------------------
# Grids


class Grid:
    """A live table: rows keyed by string, named columns, JSON scalar values.

    `grid[key]` is the row (the default row when there is none yet); `grid[key] = {...}` sets
    it; `grid[key][column] = value` sets one cell; `del grid[key]` removes it.
    """

    def __init__(self, name: str, columns: list[str], default: Optional[Callable[[], dict]] = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("a grid name is a non-empty string")
        columns = list(columns)
        if not columns or not all(isinstance(column, str) and column for column in columns):
            raise TypeError(f"grid `{name}` needs a list of column names (non-empty strings)")
        if len(set(columns)) != len(columns):
            raise ValueError(f"grid `{name}` names a column twice")
        if default is not None and not callable(default):
            raise TypeError(f"default of grid `{name}` must be a function returning a row, e.g. lambda: {{...}}")
        self.name = name
        self.columns = columns
        self._column_set = frozenset(columns)
        self._default = default
        self._rows: dict[str, dict[str, Any]] = {}
        # Rows changed since the platform last took the changes: key -> row, or None if deleted.
        self._changed: dict[str, Optional[dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"<aerogrid.Grid {self.name!r} columns={self.columns!r} rows={len(self._rows)}>"

    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            return key
        if isinstance(key, int) and not isinstance(key, bool):
            return str(key)
        raise TypeError(f"grid `{self.name}` rows are keyed by strings, not {type(key).__name__}")

    def _check_row(self, row: Any) -> dict[str, Any]:
        if type(row) is not dict and not isinstance(row, dict):
            raise TypeError(f"a row of grid `{self.name}` is a dict of column values, not {type(row).__name__}")
        checked = dict.fromkeys(self.columns)
        column_set = self._column_set
        for column, value in row.items():
            # The common cells inline; anything else gets the full check (and its message).
            kind = type(value)
            if column not in column_set or not (
                kind is str
                or value is None
                or kind is bool
                or (kind is int and _MIN_INT <= value <= _MAX_INT)
                or (kind is float and value - value == 0.0)
            ):
                self._check_cell(column, value)
            checked[column] = value
        return checked

    def _check_cell(self, column: Any, value: Any) -> None:
        if column not in self._column_set:
            raise KeyError(
                f"grid `{self.name}` has no column {column!r} (its columns: {', '.join(self.columns)})"
            )
        if not isinstance(value, _SCALARS):
            raise TypeError(
                f"grid cells hold str, int, float, bool or None; column `{column}` of grid `{self.name}` got {type(value).__name__}"
            )
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ValueError(f"column `{column}` of grid `{self.name}` got {value}, beyond 64-bit integers")
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise ValueError(f"column `{column}` of grid `{self.name}` got {value}, which JSON cannot carry")

    def _default_row(self) -> dict[str, Any]:
        if self._default is None:
            return {column: None for column in self.columns}
        return self._check_row(self._default())

    def __getitem__(self, key: Any) -> "Row":
        if type(key) is not str:
            key = self._key(key)
        row = self._rows.get(key)
        return _row(self, key, self._default_row() if row is None else row)

    def get(self, key: Any, default: Any = None) -> Any:
        key = self._key(key)
        row = self._rows.get(key)
        return default if row is None else _row(self, key, row)

    def __setitem__(self, key: Any, row: Any) -> None:
        if type(key) is not str:
            key = self._key(key)
        checked = self._check_row(row)
        self._rows[key] = checked
        self._changed[key] = checked

    def _set_cell(self, key: str, column: str, value: Any) -> None:
        self._check_cell(column, value)
        row = self._rows.get(key)
        if row is None:
            row = self._default_row()
            self._rows[key] = row
        row[column] = value
        self._changed[key] = row

    def __delitem__(self, key: Any) -> None:
        key = self._key(key)
        if key not in self._rows:
            raise KeyError(f"grid `{self.name}` has no row {key!r}")
        del self._rows[key]
        self._changed[key] = None

    def __contains__(self, key: Any) -> bool:
        try:
            return self._key(key) in self._rows
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._rows))

    def keys(self) -> list[str]:
        return list(self._rows)

    def items(self) -> Iterator[tuple[str, "Row"]]:
        for key in list(self._rows):
            yield key, _row(self, key, self._rows[key])

    def clear(self) -> None:
        for key in self._rows:
            self._changed[key] = None
        self._rows.clear()

    # Platform side.

    def _take_changes(self) -> dict[str, Optional[dict[str, Any]]]:
        """The rows changed since the last call (None for deleted ones), as plain copies."""
        changed = {key: (None if row is None else dict(row)) for key, row in self._changed.items()}
        self._changed.clear()
        return changed

    def _restore(self, rows: dict[str, dict[str, Any]]) -> None:
        """Loads rows recovered from the changelog, without reporting them as changes."""
        self._rows = {key: {column: row.get(column) for column in self.columns} for key, row in rows.items()}
        self._changed.clear()


class Row(dict):
    """One row of a grid, as a dict; setting a cell writes it to the grid."""

    __slots__ = ("_grid", "_key")
    _grid: Grid
    _key: str

    def __setitem__(self, column: str, value: Any) -> None:
        self._grid._set_cell(self._key, column, value)
        super().__setitem__(column, value)

    def __missing__(self, column: str) -> Any:
        raise KeyError(
            f"grid `{self._grid.name}` has no column {column!r} (its columns: {', '.join(self._grid.columns)})"
        )

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for column, value in dict(*args, **kwargs).items():
            self[column] = value


def _row(grid: Grid, key: str, values: dict[str, Any]) -> Row:
    # dict's own constructor, then the slots: no Python-level __init__ on the hot path.
    row = Row(values)
    row._grid = grid
    row._key = key
    return row


# ---------------------------------------------------------------------------------------------
# Streams


class Event(typing.NamedTuple):
    """One decoded message with where it came from."""

    key: Any
    value: Any
    topic: str
    partition: int
    offset: int
    timestamp: Optional[int]


# What a stream's awaitable yields to the driver when it has handed out every record it has.
_NEED_RECORDS = object()


class Stream:
    """The records of one or more topics, in the order they arrive.

        async for value in stream: ...
        async for key, value in stream.items(): ...
        async for key, value, topic, partition, offset, timestamp in stream.events(): ...
    """

    def __init__(self, topics: tuple[Topic, ...]) -> None:
        self.topics = topics
        self._events: list[Event] = []
        self._position = 0

    def __aiter__(self) -> "_StreamIterator":
        return _StreamIterator(self, _value)

    def items(self) -> "_StreamIterator":
        return _StreamIterator(self, _item)

    def events(self) -> "_StreamIterator":
        return _StreamIterator(self, _event)

    # Platform side.

    def _feed(self, events: list[Event]) -> None:
        self._events = events
        self._position = 0

    def _current(self) -> Optional[Event]:
        """The record handed out last (the one user code was working on)."""
        if 0 < self._position <= len(self._events):
            return self._events[self._position - 1]
        return None

    def _exhausted(self) -> bool:
        return self._position >= len(self._events)


def _value(event: Event) -> Any:
    return event.value


def _item(event: Event) -> tuple[Any, Any]:
    return (event.key, event.value)


def _event(event: Event) -> Event:
    return event


class _StreamIterator:
    __slots__ = ("_stream", "_shape")

    def __init__(self, stream: Stream, shape: Callable[[Event], Any]) -> None:
        self._stream = stream
        self._shape = shape

    def __aiter__(self) -> "_StreamIterator":
        return self

    def __anext__(self) -> "_NextRecord":
        return _NextRecord(self._stream, self._shape)


class _NextRecord:
    """The awaitable of one `async for` step: a record now, or a pause until the next batch."""

    __slots__ = ("_stream", "_shape")

    def __init__(self, stream: Stream, shape: Callable[[Event], Any]) -> None:
        self._stream = stream
        self._shape = shape

    def __await__(self) -> Any:
        stream = self._stream
        while stream._position >= len(stream._events):
            yield _NEED_RECORDS
        event = stream._events[stream._position]
        stream._position += 1
        return self._shape(event)


# ---------------------------------------------------------------------------------------------
# The app


class StreamSpec(typing.NamedTuple):
    function: Callable[[Stream], Any]
    topics: tuple[Topic, ...]


class TimerSpec(typing.NamedTuple):
    function: Callable[[], Any]
    seconds: float


# The App of the module being loaded (the platform runs one App per connector).
_apps: list["App"] = []


class App:
    """A connector app: its topics, grids, streams and timers.

    `broker` is accepted for compatibility and ignored: the platform's broker is always used.
    """

    def __init__(self, name: str, broker: Any = None, **settings: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("an app name is a non-empty string")
        if _apps:
            raise RuntimeError("a connector has exactly one aerogrid.App; this module creates a second one")
        self.name = name
        self.settings = settings
        self.topics: dict[str, Topic] = {}
        self.grids: dict[str, Grid] = {}
        self.streams: list[StreamSpec] = []
        self.timers: list[TimerSpec] = []
        _apps.append(self)

    def topic(
        self,
        name: str,
        key_type: Any = str,
        value_type: Any = dict,
        key_serializer: str = "json",
        value_serializer: str = "json",
    ) -> Topic:
        topic = Topic(self, name, key_type, value_type, key_serializer, value_serializer)
        if name in self.topics:
            existing = self.topics[name]
            declared = (existing.key_type, existing.value_type, existing.key_serializer, existing.value_serializer)
            if declared != (topic.key_type, topic.value_type, topic.key_serializer, topic.value_serializer):
                raise ValueError(f"topic `{name}` is declared twice with different types")
            return existing
        self.topics[name] = topic
        return topic

    def Grid(self, name: str, columns: list[str], default: Optional[Callable[[], dict]] = None) -> Grid:  # noqa: N802 (the API's name)
        if name in self.grids:
            raise ValueError(f"grid `{name}` is declared twice")
        grid = Grid(name, columns, default)
        self.grids[name] = grid
        return grid

    def stream(self, *topics: Topic) -> Callable[[Callable[[Stream], Any]], Callable[[Stream], Any]]:
        if not topics:
            raise TypeError("@app.stream needs at least one topic: @app.stream(orders_topic)")
        for topic in topics:
            if not isinstance(topic, Topic):
                raise TypeError(f"@app.stream takes topics made by app.topic(...), not {topic!r}")
            if topic.app is not self:
                raise ValueError(f"topic `{topic.name}` belongs to another app")

        def register(function: Callable[[Stream], Any]) -> Callable[[Stream], Any]:
            if not _is_async_function(function):
                raise TypeError(
                    f"a stream is an `async def` function taking the stream; `{getattr(function, '__name__', function)}` is not"
                )
            self.streams.append(StreamSpec(function, tuple(topics)))
            return function

        return register

    def timer(self, seconds: float) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or not MIN_TIMER_SECONDS <= seconds <= MAX_TIMER_SECONDS
        ):
            raise ValueError(
                f"@app.timer takes {MIN_TIMER_SECONDS} to {MAX_TIMER_SECONDS:g} seconds, not {seconds!r}"
            )

        def register(function: Callable[[], Any]) -> Callable[[], Any]:
            if not callable(function):
                raise TypeError("@app.timer decorates a function")
            self.timers.append(TimerSpec(function, float(seconds)))
            return function

        return register


def _is_async_function(function: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(function)


# In a connector process, the Rust implementations (`connector/src/native.rs`) of the hot paths.
try:
    from aerogrid._native import NEED_RECORDS as _NEED_RECORDS  # noqa: F811
    from aerogrid._native import Grid  # type: ignore[assignment] # noqa: F811
    from aerogrid._native import Row  # type: ignore[assignment] # noqa: F811
    from aerogrid._native import Stream  # type: ignore[assignment] # noqa: F811
except ImportError:
    pass
