"""The platform's side of a connector: loads the user's module, feeds its streams with records,
runs its timers, and hands back grid changes, bad records and log lines.

The connector process calls this; user code never needs it.
"""

from __future__ import annotations

import datetime
import decimal
import gc
import json
import linecache
import logging
import sys
import time
import traceback
import types
import typing
from typing import Any, Callable, Optional

import aerogrid
from aerogrid import _NEED_RECORDS, App, Event, Record, RecordError, Stream, StreamSpec, Topic, _coerce


# The name the user's module runs under.
MODULE_NAME = "__aerogrid_connector__"


class LoadError(Exception):
    """The module cannot run; `line` is where, when known."""

    def __init__(self, message: str, line: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class BadRecord(typing.NamedTuple):
    topic: str
    partition: int
    offset: int
    reason: str
    # The line of user code that raised, for exceptions in user code.
    line: Optional[int]
    key: Optional[bytes]
    value: Optional[bytes]


class LogLine(typing.NamedTuple):
    level: str
    message: str


# A message as the runtime node hands it over.
class RawMessage(typing.NamedTuple):
    key: Optional[bytes]
    value: Optional[bytes]
    partition: int
    offset: int
    timestamp: Optional[int]


class _RunningStream:
    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.stream = Stream(spec.topics)
        self.coroutine: Any = None
        self.finished = False
        self.raw_by_offset: dict[tuple[str, int, int], RawMessage] = {}


class Connector:
    """One loaded connector module."""

    def __init__(self, source: str, filename: str = "main.py") -> None:
        self.filename = filename
        self.bad_records: list[BadRecord] = []
        self.logs: list[LogLine] = []
        self._saved_output = (sys.stdout, sys.stderr, logging.getLogger().handlers[:])
        self._install_log_capture()
        self.app = self._load(source)
        self._streams = [_RunningStream(spec) for spec in self.app.streams]
        self._streams_by_topic: dict[str, list[_RunningStream]] = {}
        for running in self._streams:
            for topic in running.spec.topics:
                self._streams_by_topic.setdefault(topic.name, []).append(running)
        self._timer_due = [time.monotonic() + timer.seconds for timer in self.app.timers]
        # Records, rows and events are many short-lived containers: the default thresholds run a
        # collection every 700 of them. What the module built at import never needs collecting.
        gc.freeze()
        gc.set_threshold(100_000, 50, 50)
        for running in self._streams:
            self._start(running)
            self._advance(running, None)

    # Loading.

    def _load(self, source: str) -> App:
        aerogrid._apps.clear()
        try:
            code = compile(source, self.filename, "exec")
        except SyntaxError as error:
            raise LoadError(f"syntax error: {error.msg}", error.lineno) from None
        # Tracebacks show the module's lines without reading a file (the sandbox allows none).
        remember_source(self.filename, source)
        # A real module in sys.modules, so annotations of Records resolve against it.
        module = types.ModuleType(MODULE_NAME)
        module.__file__ = self.filename
        module.BROKER_URI = aerogrid.BROKER_URI  # type: ignore[attr-defined]
        sys.modules[MODULE_NAME] = module
        try:
            exec(code, module.__dict__)
        except MemoryError:
            # The app's memory limit: the connector stops the app, it is no error of the module.
            raise
        except Exception as error:  # noqa: BLE001 (any failure of user code is reported)
            message, line = self._describe(error)
            raise LoadError(message, line) from None
        if not aerogrid._apps:
            raise LoadError("the module creates no aerogrid.App: add `app = aerogrid.App('name')`")
        return aerogrid._apps[0]

    # Records.

    def process(self, topic_name: str, messages: list[RawMessage]) -> None:
        """Decodes a batch of one topic and runs every stream that reads it."""
        topic = self.app.topics.get(topic_name)
        if topic is None:
            return
        events = []
        raw_by_offset = {}
        for message in messages:
            try:
                key = decode_key(topic, message.key)
                value = decode_value(topic, message.value)
            except RecordError as error:
                self.bad_records.append(
                    BadRecord(topic_name, message.partition, message.offset, str(error), None, message.key, message.value)
                )
                continue
            events.append(Event(key, value, topic_name, message.partition, message.offset, message.timestamp))
            raw_by_offset[(topic_name, message.partition, message.offset)] = message
        if not events:
            return
        for running in self._streams_by_topic.get(topic_name, ()):
            if running.finished:
                continue
            running.raw_by_offset = raw_by_offset
            running.stream._feed(events)
            self._advance(running, None)

    def process_events(self, topic_name: str, batch: Any) -> None:
        """Runs every stream that reads `topic_name` over records the connector decoded."""
        for running in self._streams_by_topic.get(topic_name, ()):
            if running.finished:
                continue
            # The connector adds raw bytes to bad records itself.
            running.raw_by_offset = {}
            running.stream._feed(batch)
            self._advance(running, None)

    def _start(self, running: _RunningStream) -> None:
        running.coroutine = running.spec.function(running.stream)

    def _advance(self, running: _RunningStream, _: Any) -> None:
        """Runs the stream's coroutine until it waits for records it does not have."""
        stream = running.stream
        while True:
            try:
                awaited = running.coroutine.send(None)
            except StopIteration:
                running.finished = True
                self.logs.append(
                    LogLine("warning", f"stream `{running.spec.function.__name__}` returned: it gets no more records")
                )
                return
            except MemoryError:
                raise
            except Exception as error:  # noqa: BLE001
                self._record_failure(running, error)
                # The stream goes on with the next record, in a fresh call of the function.
                self._start(running)
                continue
            if awaited is _NEED_RECORDS:
                if stream._exhausted():
                    return
                continue
            running.coroutine.close()
            self._record_failure(
                running,
                TypeError(
                    f"streams can only await their records; `{running.spec.function.__name__}` awaited {awaited!r}"
                ),
            )
            self._start(running)

    def _record_failure(self, running: _RunningStream, error: BaseException) -> None:
        message, line = self._describe(error)
        event = running.stream._current()
        if event is None:
            self.logs.append(LogLine("error", message))
            return
        raw = running.raw_by_offset.get((event.topic, event.partition, event.offset))
        self.bad_records.append(
            BadRecord(
                event.topic,
                event.partition,
                event.offset,
                message,
                line,
                raw.key if raw else None,
                raw.value if raw else None,
            )
        )
        self.logs.append(LogLine("error", f"{message} (record {event.topic}/{event.partition}@{event.offset})"))

    def _describe(self, error: BaseException) -> tuple[str, Optional[int]]:
        """`Type: message (line N, in function)`, with the user's frames only."""
        frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == self.filename]
        if isinstance(error, SyntaxError) and error.filename == self.filename:
            return f"SyntaxError: {error.msg} (line {error.lineno})", error.lineno
        text = f"{type(error).__name__}: {error}"
        if not frames:
            return text, None
        last = frames[-1]
        where = f"line {last.lineno}, in {last.name}" if last.name != "<module>" else f"line {last.lineno}"
        return f"{text} ({where})", last.lineno

    # Timers.

    def run_due_timers(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        for index, timer in enumerate(self.app.timers):
            if now < self._timer_due[index]:
                continue
            # Skip missed ticks rather than running them in a burst.
            self._timer_due[index] = max(self._timer_due[index] + timer.seconds, now)
            try:
                result = timer.function()
                if hasattr(result, "send"):
                    _run_to_end(result)
            except MemoryError:
                raise
            except Exception as error:  # noqa: BLE001
                message, _ = self._describe(error)
                self.logs.append(LogLine("error", f"timer `{timer.function.__name__}` failed: {message}"))

    def next_timer_due(self) -> Optional[float]:
        return min(self._timer_due, default=None)

    # Grids.

    def take_changes(self) -> dict[str, dict[str, Optional[dict[str, Any]]]]:
        changes = {}
        for name, grid in self.app.grids.items():
            grid_changes = grid._take_changes()
            if grid_changes:
                changes[name] = grid_changes
        return changes

    def restore(self, grid_name: str, rows: dict[str, dict[str, Any]]) -> None:
        grid = self.app.grids.get(grid_name)
        if grid is not None:
            grid._restore(rows)

    def take_bad_records(self) -> list[BadRecord]:
        taken, self.bad_records = self.bad_records, []
        return taken

    def take_logs(self) -> list[LogLine]:
        taken, self.logs = self.logs, []
        return taken

    # Logs.

    def close(self) -> None:
        """Gives stdout, stderr and logging back (tests load several connectors in one process)."""
        sys.stdout, sys.stderr, handlers = self._saved_output
        logging.getLogger().handlers[:] = handlers

    def _install_log_capture(self) -> None:
        sys.stdout = _LogWriter(self, "info")  # type: ignore[assignment]
        sys.stderr = _LogWriter(self, "error")  # type: ignore[assignment]
        root = logging.getLogger()
        root.handlers[:] = [_LogHandler(self)]
        root.setLevel(logging.INFO)


def remember_source(filename: str, source: str) -> None:
    """Puts a module that is not a file into `linecache`, for tracebacks."""
    lines = source.splitlines(keepends=True)
    # No modification time: `linecache.checkcache` keeps the entry.
    linecache.cache[filename] = (len(source), None, lines, filename)


def _run_to_end(coroutine: Any) -> None:
    try:
        while True:
            awaited = coroutine.send(None)
            if awaited is not None:
                coroutine.close()
                raise TypeError(f"timers cannot await {awaited!r}")
    except StopIteration:
        return


class _LogWriter:
    """`print` and writes to stderr, as log lines."""

    def __init__(self, connector: Connector, level: str) -> None:
        self._connector = connector
        self._level = level
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._connector.logs.append(LogLine(self._level, line))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._connector.logs.append(LogLine(self._level, self._pending))
            self._pending = ""

    def isatty(self) -> bool:
        return False


class _LogHandler(logging.Handler):
    def __init__(self, connector: Connector) -> None:
        super().__init__()
        self._connector = connector

    def emit(self, record: logging.LogRecord) -> None:
        self._connector.logs.append(LogLine(record.levelname.lower(), self.format(record)))


# Decoding.


def describe_topic(topic: Topic) -> tuple[str, tuple[Any, ...], list[tuple[type, list[tuple[Any, ...]]]], str, str]:
    """How the topic's keys and values decode, for the connector's decoder (`connector/src/native.rs`):
    `(key kind, value spec, [(Record class, [(field, type spec, default kind, default)])],
    key serializer, value serializer)`, where `("record", n)` in a spec is the n-th Record class
    of that list."""
    records: list[tuple[type, list[tuple[Any, ...]]]] = []
    indexes: dict[type, int] = {}

    def record_index(cls: type) -> int:
        if cls not in indexes:
            indexes[cls] = len(records)
            fields: list[tuple[Any, ...]] = []
            records.append((cls, fields))
            for name, (annotation, default) in cls.__aerogrid_fields__.items():  # type: ignore[attr-defined]
                if default is not aerogrid._MISSING:
                    kind = "declared"
                elif aerogrid._is_optional(annotation):
                    kind = "null"
                else:
                    kind = "required"
                fields.append((name, type_spec(annotation), kind, None if kind != "declared" else default))
        return indexes[cls]

    def type_spec(annotation: Any) -> tuple[Any, ...]:
        if annotation is Any or annotation is object:
            return ("any",)
        if aerogrid._union_origin(annotation):
            options = typing.get_args(annotation)
            return ("union", [type_spec(option) for option in options if option is not type(None)], type(None) in options)
        origin = typing.get_origin(annotation)
        if origin is list:
            (item_type,) = typing.get_args(annotation) or (Any,)
            return ("list", type_spec(item_type))
        if annotation is list:
            return ("anylist",)
        if origin is dict or annotation is dict:
            return ("dict",)
        if isinstance(annotation, type) and issubclass(annotation, Record):
            return ("record", record_index(annotation))
        for plain in (bool, int, float, str):
            if annotation is plain:
                return (plain.__name__,)
        logical = {datetime.datetime: "datetime", datetime.date: "date", decimal.Decimal: "decimal"}
        if annotation in logical:
            return (logical[annotation],)
        return ("unsupported", repr(annotation))

    key_kind = {str: "str", bytes: "bytes", int: "int", type(None): "none"}[topic.key_type]
    value_type = topic.value_type
    if value_type is bytes or value_type is str:
        value: tuple[Any, ...] = (value_type.__name__,)
    elif value_type is dict:
        value = ("object",)
    elif isinstance(value_type, type) and issubclass(value_type, Record):
        value = ("record", record_index(value_type))
    else:
        value = ("scalar", type_spec(value_type))
    return key_kind, value, records, topic.key_serializer, topic.value_serializer


def _confluent_payload(raw: bytes) -> bytes:
    """The payload of a message in the Confluent wire format (magic byte 0, schema id)."""
    if len(raw) < 5 or raw[0] != 0:
        raise RecordError("the value is not in the schema registry's wire format (no magic byte 0 and schema id)")
    return raw[5:]


def decode_key(topic: Topic, raw: Optional[bytes]) -> Any:
    key_type = topic.key_type
    if key_type is type(None) or raw is None:
        return None
    if key_type is bytes:
        return raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("the key is not UTF-8 text") from None
    if key_type is int:
        try:
            return int(text)
        except ValueError:
            raise RecordError(f"the key {text[:40]!r} is not an integer") from None
    return text


def decode_value(topic: Topic, raw: Optional[bytes]) -> Any:
    value_type = topic.value_type
    if value_type is bytes and topic.value_serializer in ("json", "raw"):
        return raw
    if raw is None:
        raise RecordError("the message has no value")
    if topic.value_serializer in ("avro", "protobuf"):
        # The reference decodes what needs no schema; the connector decodes these.
        raise RecordError(f"{topic.value_serializer} values are decoded by the connector only")
    if topic.value_serializer == "json-schema":
        raw = _confluent_payload(raw)
    if value_type is str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError("the value is not UTF-8 text") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"the value is not JSON: {error}") from None
    if isinstance(value_type, type) and issubclass(value_type, Record):
        return value_type.from_json(data)
    if value_type is dict:
        if not isinstance(data, dict):
            raise RecordError(f"the value should be a JSON object, got {aerogrid._json_type(data)}")
        return data
    return _coerce(data, value_type, "value")
