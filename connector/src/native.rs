//! `aerogrid._native`: the hot paths of the API in Rust. Decoded messages become Python objects
//! here, streams hand them to `async for` without a Python frame per record, and grids
//! (`grid.rs`) read and set rows without one.
//!
//! `aerogrid/__init__.py` keeps the reference implementations; when this module is present (in a
//! connector process) its `Stream` replaces them.

use pyo3::{
    exceptions::{PyStopIteration, PyValueError},
    prelude::*,
    sync::PyOnceLock,
    types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType},
};
use serde_json::Value as Json;

mod grid;

use crate::decode::{
    Decoded, FieldDefault, FieldSpec, Format, KeySpec, RecordSpec, TopicSchema, TypeSpec, ValueSpec,
};

/// What a stream's awaitable yields to the driver when it has handed out every record it has.
static NEED_RECORDS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Builds the module (registered in `sys.modules` before `aerogrid` is imported).
pub(crate) fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "aerogrid._native")?;
    module.add_class::<Stream>()?;
    install_send(py);
    module.add_class::<grid::Grid>()?;
    module.add_class::<grid::GridItems>()?;
    module.add_class::<grid::Row>()?;
    module.add_class::<EventBatch>()?;
    module.add("NEED_RECORDS", need_records(py))?;
    Ok(module)
}

fn need_records(py: Python<'_>) -> &Py<PyAny> {
    NEED_RECORDS.get_or_init(py, || {
        py.import("builtins")
            .and_then(|builtins| builtins.getattr("object")?.call0())
            .expect("object() cannot fail")
            .unbind()
    })
}

/// A topic's schema, with the Python side of its Record classes.
pub(crate) struct TopicDecoder {
    pub(crate) schema: TopicSchema,
    classes: Vec<RecordClass>,
}

struct RecordClass {
    class: Py<PyType>,
    field_names: Vec<Py<PyString>>,
    defaults: Vec<Option<Py<PyAny>>>,
}

impl TopicDecoder {
    /// Reads the description `aerogrid._driver.describe_topic` gives.
    pub(crate) fn from_description(description: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (key, value, records, key_serializer, value_serializer): (
            String,
            Bound<'_, PyAny>,
            Vec<Bound<'_, PyAny>>,
            String,
            String,
        ) = description.extract()?;
        let key_format = format(&key_serializer)?;
        let value_format = format(&value_serializer)?;
        let key = match key.as_str() {
            "none" => KeySpec::Ignore,
            "bytes" => KeySpec::Bytes,
            "str" => KeySpec::Str,
            "int" => KeySpec::Int,
            other => return Err(PyValueError::new_err(format!("key type {other}"))),
        };
        let kind: String = value.get_item(0)?.extract()?;
        let value = match kind.as_str() {
            "bytes" => ValueSpec::Bytes,
            "str" => ValueSpec::Str,
            "object" => ValueSpec::Object,
            "record" => ValueSpec::Record(value.get_item(1)?.extract()?),
            "scalar" => ValueSpec::Scalar(type_spec(&value.get_item(1)?)?),
            other => return Err(PyValueError::new_err(format!("value type {other}"))),
        };
        let mut specs = Vec::new();
        let mut classes = Vec::new();
        for record in records {
            let (class, fields): (Bound<'_, PyType>, Vec<Bound<'_, PyAny>>) = record.extract()?;
            let mut field_specs = Vec::new();
            let mut field_names = Vec::new();
            let mut defaults = Vec::new();
            for field in fields {
                let (name, spec, default_kind, default): (
                    Bound<'_, PyString>,
                    Bound<'_, PyAny>,
                    String,
                    Bound<'_, PyAny>,
                ) = field.extract()?;
                let default_kind = match default_kind.as_str() {
                    "required" => FieldDefault::Required,
                    "declared" => FieldDefault::Declared,
                    "null" => FieldDefault::Null,
                    other => return Err(PyValueError::new_err(format!("default kind {other}"))),
                };
                field_specs.push(FieldSpec {
                    name: name.to_str()?.to_owned(),
                    spec: type_spec(&spec)?,
                    default: default_kind,
                });
                field_names.push(PyString::intern(description.py(), name.to_str()?).unbind());
                defaults.push((default_kind == FieldDefault::Declared).then(|| default.unbind()));
            }
            specs.push(RecordSpec { class_name: class.name()?.to_string(), fields: field_specs });
            classes.push(RecordClass { class: class.unbind(), field_names, defaults });
        }
        let schema = TopicSchema { key, value, records: specs, key_format, value_format };
        Ok(Self { schema, classes })
    }

    /// A decoded key or value as the Python object the user's code sees.
    pub(crate) fn to_python<'py>(
        &self,
        py: Python<'py>,
        decoded: &Decoded,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match decoded {
            Decoded::Null | Decoded::Default => py.None().into_bound(py),
            Decoded::Bool(value) => value.into_pyobject(py)?.to_owned().into_any(),
            Decoded::Int(value) => value.into_pyobject(py)?.into_any(),
            Decoded::BigInt(text) => py.import("builtins")?.getattr("int")?.call1((text,))?,
            Decoded::Float(value) => value.into_pyobject(py)?.into_any(),
            Decoded::Str(text) => PyString::new(py, text).into_any(),
            Decoded::Bytes(bytes) => PyBytes::new(py, bytes).into_any(),
            Decoded::Datetime(micros) => datetime_to_python(py, *micros)?,
            Decoded::Date(days) => {
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
                let date = epoch + chrono::Duration::days(i64::from(*days));
                use chrono::Datelike;
                let (month, day) = (date.month() as u8, date.day() as u8);
                pyo3::types::PyDate::new(py, date.year(), month, day)?.into_any()
            }
            Decoded::Decimal(text) => {
                static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                let decimal = DECIMAL.get_or_try_init(py, || {
                    py.import("decimal")?.getattr("Decimal").map(Bound::unbind)
                })?;
                decimal.bind(py).call1((text.replace('_', ""),))?
            }
            Decoded::List(items) => {
                let list = PyList::empty(py);
                for item in items {
                    list.append(self.to_python(py, item)?)?;
                }
                list.into_any()
            }
            Decoded::Json(json) => json_to_python(py, json)?,
            Decoded::Record(index, fields) => {
                let class = &self.classes[*index];
                let values = PyDict::new(py);
                for (position, field) in fields.iter().enumerate() {
                    let value = match field {
                        Decoded::Default => copy_default(py, class.defaults[position].as_ref())?,
                        other => self.to_python(py, other)?,
                    };
                    values.set_item(class.field_names[position].bind(py), value)?;
                }
                // `object.__new__` and the values as its `__dict__`: `Record.__init__` would
                // check the values again, and they are checked.
                static OBJECT_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
                let object_new = OBJECT_NEW.get_or_try_init(py, || {
                    py.import("builtins")?.getattr("object")?.getattr("__new__").map(Bound::unbind)
                })?;
                let record = object_new.bind(py).call1((class.class.bind(py),))?;
                record.setattr(pyo3::intern!(py, "__dict__"), values)?;
                record
            }
        })
    }
}

/// A fresh copy of mutable defaults, so records never share a list (as `Record._fill` does).
fn copy_default<'py>(py: Python<'py>, default: Option<&Py<PyAny>>) -> PyResult<Bound<'py, PyAny>> {
    let Some(default) = default else { return Ok(py.None().into_bound(py)) };
    let default = default.bind(py);
    if default.is_instance_of::<PyList>() || default.is_instance_of::<PyDict>() {
        default.call_method0(pyo3::intern!(py, "copy"))
    } else {
        Ok(default.clone())
    }
}

fn type_spec(description: &Bound<'_, PyAny>) -> PyResult<TypeSpec> {
    let kind: String = description.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "any" => TypeSpec::Any,
        "str" => TypeSpec::Str,
        "int" => TypeSpec::Int,
        "float" => TypeSpec::Float,
        "bool" => TypeSpec::Bool,
        "dict" => TypeSpec::Dict,
        "anylist" => TypeSpec::AnyList,
        "list" => TypeSpec::List(Box::new(type_spec(&description.get_item(1)?)?)),
        "record" => TypeSpec::Record(description.get_item(1)?.extract()?),
        "union" => TypeSpec::Union {
            options: description
                .get_item(1)?
                .try_iter()?
                .map(|option| type_spec(&option?))
                .collect::<PyResult<_>>()?,
            nullable: description.get_item(2)?.extract()?,
        },
        "datetime" => TypeSpec::Datetime,
        "date" => TypeSpec::Date,
        "decimal" => TypeSpec::Decimal,
        "unsupported" => TypeSpec::Unsupported(description.get_item(1)?.extract()?),
        other => return Err(PyValueError::new_err(format!("field type {other}"))),
    })
}

/// As `json.loads` builds it.
fn json_to_python<'py>(py: Python<'py>, json: &Json) -> PyResult<Bound<'py, PyAny>> {
    Ok(match json {
        Json::Null => py.None().into_bound(py),
        Json::Bool(value) => value.into_pyobject(py)?.to_owned().into_any(),
        Json::Number(number) => {
            if let Some(value) = number.as_i64() {
                value.into_pyobject(py)?.into_any()
            } else if let Some(value) = number.as_u64() {
                value.into_pyobject(py)?.into_any()
            } else {
                number.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Json::String(text) => PyString::new(py, text).into_any(),
        Json::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_python(py, item)?)?;
            }
            list.into_any()
        }
        Json::Object(object) => {
            let dict = PyDict::new(py);
            for (key, value) in object {
                dict.set_item(key, json_to_python(py, value)?)?;
            }
            dict.into_any()
        }
    })
}

/// One decoded message.
pub(crate) struct Event {
    pub(crate) key: Py<PyAny>,
    pub(crate) value: Py<PyAny>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: Option<i64>,
}

/// The decoded messages of one batch of one topic, shared by every stream that reads it.
#[pyclass(frozen, module = "aerogrid._native")]
pub(crate) struct EventBatch {
    topic: Py<PyString>,
    events: Vec<Event>,
}

impl EventBatch {
    pub(crate) fn new(topic: Py<PyString>, events: Vec<Event>) -> Self {
        Self { topic, events }
    }
}

#[pymethods]
impl EventBatch {
    fn __len__(&self) -> usize {
        self.events.len()
    }
}

/// The records of one or more topics, in the order they arrive:
///
/// ```python
/// async for value in stream: ...
/// async for key, value in stream.items(): ...
/// async for key, value, topic, partition, offset, timestamp in stream.events(): ...
/// ```
#[pyclass(module = "aerogrid", name = "Stream")]
pub(crate) struct Stream {
    #[pyo3(get)]
    topics: Py<PyAny>,
    batch: Option<Py<EventBatch>>,
    position: usize,
}

#[derive(Clone, Copy)]
enum Shape {
    Value,
    Item,
    Event,
}

#[pymethods]
impl Stream {
    #[new]
    fn new(topics: Py<PyAny>) -> Self {
        Self { topics, batch: None, position: 0 }
    }

    fn __aiter__(slf: Py<Self>) -> StreamIterator {
        StreamIterator { stream: slf, shape: Shape::Value }
    }

    fn items(slf: Py<Self>) -> StreamIterator {
        StreamIterator { stream: slf, shape: Shape::Item }
    }

    fn events(slf: Py<Self>) -> StreamIterator {
        StreamIterator { stream: slf, shape: Shape::Event }
    }

    // Platform side.

    fn _feed(&mut self, batch: Py<EventBatch>) {
        self.batch = Some(batch);
        self.position = 0;
    }

    /// The record handed out last (the one user code was working on).
    fn _current(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(batch) = &self.batch else { return Ok(None) };
        let batch = batch.get();
        if self.position == 0 || self.position > batch.events.len() {
            return Ok(None);
        }
        shape(py, batch, self.position - 1, Shape::Event).map(Some)
    }

    fn _exhausted(&self) -> bool {
        self.batch.as_ref().is_none_or(|batch| self.position >= batch.get().events.len())
    }
}

fn shape(py: Python<'_>, batch: &EventBatch, index: usize, shape: Shape) -> PyResult<Py<PyAny>> {
    let event = &batch.events[index];
    Ok(match shape {
        Shape::Value => event.value.clone_ref(py),
        Shape::Item => {
            PyTuple::new(py, [event.key.bind(py), event.value.bind(py)])?.into_any().unbind()
        }
        Shape::Event => {
            static EVENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            let class = EVENT.get_or_try_init(py, || {
                py.import("aerogrid").and_then(|module| module.getattr("Event")).map(Bound::unbind)
            })?;
            class
                .bind(py)
                .call1((
                    event.key.bind(py),
                    event.value.bind(py),
                    batch.topic.bind(py),
                    event.partition,
                    event.offset,
                    event.timestamp,
                ))?
                .unbind()
        }
    })
}

/// `async for` over a stream: its own awaitable, so a step allocates nothing but the result.
#[pyclass(module = "aerogrid._native")]
pub(crate) struct StreamIterator {
    stream: Py<Stream>,
    shape: Shape,
}

#[pymethods]
impl StreamIterator {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next record as the await's result, or a pause (yielding to the driver) until the
    /// next batch. (CPython's `await` calls `stream_send` instead, without the StopIteration.)
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.step(py)? {
            Step::Record(value) => Err(PyStopIteration::new_err((value,))),
            Step::Pause(sentinel) => Ok(sentinel),
        }
    }
}

/// What one step of a stream's `await` gives.
enum Step {
    /// The await's result.
    Record(Py<PyAny>),
    /// Yielded to the driver: the stream has handed out its batch.
    Pause(Py<PyAny>),
}

impl StreamIterator {
    fn step(&self, py: Python<'_>) -> PyResult<Step> {
        let mut stream = self.stream.bind(py).try_borrow_mut()?;
        let position = stream.position;
        let Some(batch) = stream.batch.as_ref().filter(|batch| position < batch.get().events.len())
        else {
            return Ok(Step::Pause(need_records(py).clone_ref(py)));
        };
        let value = shape(py, batch.get(), position, self.shape)?;
        stream.position += 1;
        crate::sandbox::watchdog::progress();
        Ok(Step::Record(value))
    }
}

/// Gives `StreamIterator` an `am_send` slot, which PyO3 does not generate: CPython's `await`
/// (the SEND instruction, through `PyIter_Send`) then gets each record as a return value, where
/// `__next__` has to raise a StopIteration per record, the largest cost of handing one out.
#[allow(unsafe_code, reason = "PyO3 has no way to declare am_send")]
fn install_send(py: Python<'_>) {
    use pyo3::PyTypeInfo;
    let class = StreamIterator::type_object_raw(py);
    // SAFETY: the type object is alive (the module holds it) and the GIL is held; its
    // `tp_as_async` points into the heap type itself, set since the class defines `__await__`.
    unsafe {
        let slots = (*class).tp_as_async;
        assert!(!slots.is_null(), "StreamIterator defines __await__");
        (*slots).am_send = Some(stream_send);
        pyo3::ffi::PyType_Modified(class);
    }
}

#[allow(unsafe_code, reason = "a CPython slot function")]
unsafe extern "C" fn stream_send(
    iterator: *mut pyo3::ffi::PyObject,
    _sent: *mut pyo3::ffi::PyObject,
    result: *mut *mut pyo3::ffi::PyObject,
) -> pyo3::ffi::PySendResult {
    use pyo3::ffi::PySendResult;
    // SAFETY: CPython calls slots attached, with a live object of this slot's type (or a
    // subclass) and a place for the result.
    let py = unsafe { Python::assume_attached() };
    let iterator = unsafe { Bound::from_borrowed_ptr(py, iterator) };
    let step = iterator
        .cast::<StreamIterator>()
        .map_err(PyErr::from)
        .and_then(|iterator| iterator.try_borrow().map_err(PyErr::from)?.step(py));
    let (status, value) = match step {
        Ok(Step::Record(value)) => (PySendResult::PYGEN_RETURN, value.into_ptr()),
        Ok(Step::Pause(sentinel)) => (PySendResult::PYGEN_NEXT, sentinel.into_ptr()),
        Err(error) => {
            error.restore(py);
            (PySendResult::PYGEN_ERROR, std::ptr::null_mut())
        }
    };
    // SAFETY: `result` is CPython's out-parameter; it takes the reference.
    unsafe { *result = value };
    status
}

/// A serializer's format; those not decoded here are refused when the app loads.
fn format(serializer: &str) -> PyResult<Format> {
    match serializer {
        "json" | "raw" | "str" => Ok(Format::Plain),
        "avro" => Ok(Format::Avro),
        "json-schema" => Ok(Format::JsonSchema),
        other => Err(PyValueError::new_err(format!(
            "the `{other}` serializer is not supported yet (json, avro, json-schema, raw and str are)"
        ))),
    }
}

/// An aware `datetime` in UTC.
fn datetime_to_python(py: Python<'_>, micros: i64) -> PyResult<Bound<'_, PyAny>> {
    use chrono::{Datelike, Timelike};
    let moment = chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| PyValueError::new_err(format!("{micros} µs is out of range")))?;
    let utc = pyo3::types::PyTzInfo::utc(py)?;
    let narrow = |value: u32| u8::try_from(value).unwrap_or(0);
    Ok(pyo3::types::PyDateTime::new(
        py,
        moment.year(),
        narrow(moment.month()),
        narrow(moment.day()),
        narrow(moment.hour()),
        narrow(moment.minute()),
        narrow(moment.second()),
        moment.timestamp_subsec_micros(),
        Some(&utc),
    )?
    .into_any())
}
