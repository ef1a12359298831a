# Type stubs of the `aerogrid` connector API (for editors: completion, hover, type checks).
from typing import Any, AsyncIterator, Callable, Iterator, Literal, NamedTuple, Optional, TypeVar, overload

BROKER_URI: str
"""The platform's broker. `App(broker=...)` accepts anything; the platform's broker is always used."""

class RecordError(ValueError):
    """A message that does not fit its Record. It becomes a bad record with this reason."""

class Record:
    """A typed message value, declared with annotations.

    Fields are str, int, float, bool, datetime.datetime (ISO 8601 text, UTC without an offset),
    datetime.date (YYYY-MM-DD), decimal.Decimal, Optional[...], list[...], dict, or nested
    Records, with optional defaults. JSON values are coerced where it is lossless ("3" to 3);
    Avro's timestamps, dates and decimals read into the same types. A message that does not
    fit is a bad record: counted, kept with its reason, and skipped.
    """

    def __init__(self, **values: Any) -> None: ...
    @classmethod
    def from_json(cls: type[_R], value: Any) -> _R: ...
    def to_dict(self) -> dict[str, Any]: ...

_R = TypeVar("_R", bound=Record)
_V = TypeVar("_V")

class Topic:
    """A topic the app reads. Made by `app.topic(...)`."""

    name: str
    key_type: type
    value_type: type
    key_serializer: Serializer
    value_serializer: Serializer

Scalar = str | int | float | bool | None

# How keys and values are written: JSON (the default); Avro, Protobuf or JSON Schema in the
# Confluent wire format with a schema registry; the bytes as they are (`raw`); UTF-8 text (`str`).
Serializer = Literal["json", "avro", "protobuf", "json-schema", "raw", "str"]

class Row(dict[str, Scalar]):
    """One row of a grid. Setting a cell (`row['col'] = v`) writes it to the grid."""

class Grid:
    """A live table: rows keyed by string, named columns, JSON scalar values.

    `grid[key]` is the row (the default row when missing); `grid[key] = {...}` sets it;
    `grid[key][column] = value` sets one cell; `del grid[key]` removes it. An unknown column is
    an error.
    """

    name: str
    columns: list[str]
    def __getitem__(self, key: str | int) -> Row: ...
    def __setitem__(self, key: str | int, row: dict[str, Scalar]) -> None: ...
    def __delitem__(self, key: str | int) -> None: ...
    def __contains__(self, key: object) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def get(self, key: str | int, default: _V = ...) -> Row | _V: ...
    def keys(self) -> list[str]: ...
    def items(self) -> Iterator[tuple[str, Row]]: ...
    def clear(self) -> None: ...

class Event(NamedTuple):
    """One record with where it came from."""

    key: Any
    value: Any
    topic: str
    partition: int
    offset: int
    timestamp: Optional[int]
    """Milliseconds since the epoch, when the message has one."""

class Stream:
    """The records of the stream's topics, in arrival order.

    `async for value in stream`, `stream.items()` for (key, value), `stream.events()` for
    (key, value, topic, partition, offset, timestamp).
    """

    def __aiter__(self) -> AsyncIterator[Any]: ...
    def items(self) -> AsyncIterator[tuple[Any, Any]]: ...
    def events(self) -> AsyncIterator[Event]: ...

class App:
    """The connector app. A module creates exactly one."""

    name: str
    def __init__(self, name: str, broker: Any = None, **settings: Any) -> None: ...
    @overload
    def topic(
        self,
        name: str,
        key_type: type = ...,
        value_type: type[_R] = ...,
        key_serializer: Serializer = "json",
        value_serializer: Serializer = "json",
    ) -> Topic: ...
    @overload
    def topic(
        self,
        name: str,
        key_type: type | None = ...,
        value_type: type = ...,
        key_serializer: Serializer = "json",
        value_serializer: Serializer = "json",
    ) -> Topic: ...
    def Grid(self, name: str, columns: list[str], default: Optional[Callable[[], dict[str, Scalar]]] = None) -> Grid:
        """A grid of this app; `default` makes the row of a key not seen yet."""
    def stream(self, *topics: Topic) -> Callable[[Callable[[Stream], Any]], Callable[[Stream], Any]]:
        """Decorates `async def f(stream)`: runs it over the records of `topics`.

        An exception skips the record (kept as a bad record with the line) and the stream goes
        on with the next one.
        """
    def timer(self, seconds: float) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        """Decorates a function (plain or async) run every `seconds`."""
