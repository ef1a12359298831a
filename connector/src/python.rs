//! The embedded interpreter and the calls into the driver (`aerogrid._driver`).

use std::{collections::HashMap, ffi::CString, time::Duration};

use aerogrid_proto::{
    runtime::v1::{
        BadRecord, BatchResult, GridChanges, GridRow, GridSpec, Load, LoadFailed, Loaded, LogLine,
        RawMessage, RestoreGrid, TopicSpec, connector_message::Kind,
    },
    v1::{Value, value},
};
use pyo3::{
    exceptions::PyMemoryError,
    prelude::*,
    types::{PyBool, PyDict, PyFloat, PyInt, PyString},
};

use crate::{
    Error, Result,
    native::{self, Event, EventBatch, TopicDecoder},
    reader::{DecodedBatch, Schemas},
    sandbox::{self, audit, watchdog},
};

/// The `aerogrid` package, compiled into the binary: the connector reads no file of ours.
const PACKAGE: &[(&str, &str, &str)] = &[
    (
        "aerogrid",
        "aerogrid/__init__.py",
        include_str!("../../connector/python/aerogrid/__init__.py"),
    ),
    (
        "aerogrid._driver",
        "aerogrid/_driver.py",
        include_str!("../../connector/python/aerogrid/_driver.py"),
    ),
];

pub(crate) struct Session {
    driver: Py<PyModule>,
    connector: Option<Py<PyAny>>,
    /// Column order of each grid, for the rows sent back.
    columns: HashMap<String, Vec<String>>,
    /// How each declared topic decodes; the reader thread shares the schemas.
    decoders: HashMap<String, TopicDecoder>,
    schemas: Schemas,
}

impl Session {
    /// Starts the interpreter and imports the embedded package.
    pub(crate) fn start(schemas: Schemas) -> Result<Self> {
        Python::initialize();
        Python::attach(|py| {
            let modules = py.import("sys")?.getattr("modules")?;
            // Before `aerogrid`, which takes its fast paths from it.
            modules.set_item("aerogrid._native", native::module(py)?)?;
            for (name, file, source) in PACKAGE {
                let module = PyModule::from_code(
                    py,
                    &c_string(source)?,
                    &c_string(file)?,
                    &c_string(name)?,
                )?;
                modules.set_item(*name, &module)?;
                if let Some((parent, child)) = name.rsplit_once('.') {
                    modules.get_item(parent)?.setattr(child, &module)?;
                }
            }
            let native = modules.get_item("aerogrid._native")?;
            modules.get_item("aerogrid")?.setattr("_native", native)?;
            crate::sandbox::watchdog::install_handler(py)?;
            let driver = py.import("aerogrid._driver")?;
            for (_, file, source) in PACKAGE {
                driver.call_method1("remember_source", (*file, *source))?;
            }
            let driver = driver.unbind();
            Ok(Self {
                driver,
                connector: None,
                columns: HashMap::new(),
                decoders: HashMap::new(),
                schemas,
            })
        })
    }

    pub(crate) fn load(&mut self, load: Load) -> Result<Kind> {
        let filename = if load.filename.is_empty() { "main.py".to_owned() } else { load.filename };
        audit::set_user_file(&filename);
        if let Some(bytes) = load.memory_limit_bytes {
            sandbox::limit_memory(bytes)?;
        }
        watchdog::set_stall_limit(
            load.stall_seconds.filter(|seconds| *seconds > 0.0).map(Duration::from_secs_f64),
        );
        let _call = watchdog::Call::start();
        Python::attach(|py| {
            let driver = self.driver.bind(py);
            let connector = match driver.getattr("Connector")?.call1((load.source, filename)) {
                Ok(connector) => connector,
                Err(error) if error.is_instance_of::<PyMemoryError>(py) => return Err(error.into()),
                Err(error) => {
                    let load_error = driver.getattr("LoadError")?;
                    let (message, line) = if error.is_instance(py, &load_error) {
                        let value = error.value(py);
                        (
                            value.getattr("message")?.extract::<String>()?,
                            value.getattr("line")?.extract::<Option<u32>>()?,
                        )
                    } else {
                        (error.to_string(), None)
                    };
                    return Ok(Kind::LoadFailed(LoadFailed { message, line }));
                }
            };
            let app = connector.getattr("app")?;
            let mut topics = Vec::new();
            self.decoders.clear();
            for (name, topic) in cast_dict(&app.getattr("topics")?)? {
                let name = name.extract::<String>()?;
                let description = driver.getattr("describe_topic")?.call1((topic.clone(),))?;
                let decoder = match TopicDecoder::from_description(&description) {
                    Ok(decoder) => decoder,
                    // A serializer this connector does not decode: the app cannot run as it is.
                    Err(error) if error.is_instance_of::<pyo3::exceptions::PyValueError>(py) => {
                        let message = format!("topic `{name}`: {}", error.value(py));
                        return Ok(Kind::LoadFailed(LoadFailed { message, line: None }));
                    }
                    Err(error) => return Err(error.into()),
                };
                self.decoders.insert(name.clone(), decoder);
                topics.push(TopicSpec {
                    name,
                    key_serializer: topic.getattr("key_serializer")?.extract()?,
                    value_serializer: topic.getattr("value_serializer")?.extract()?,
                });
            }
            // Before `Loaded` goes out: the node sends batches only after it.
            *self.schemas.lock().expect("no thread panics holding the schemas") = self
                .decoders
                .iter()
                .map(|(name, decoder)| (name.clone(), std::sync::Arc::new(decoder.schema.clone())))
                .collect();
            let mut grids = Vec::new();
            self.columns.clear();
            for (name, grid) in app
                .getattr("grids")?
                .cast::<PyDict>()
                .map_err(|error| Error::Python(error.to_string()))?
            {
                let name = name.extract::<String>()?;
                let columns = grid.getattr("columns")?.extract::<Vec<String>>()?;
                self.columns.insert(name.clone(), columns.clone());
                grids.push(GridSpec { name, columns });
            }
            let streams = u32::try_from(app.getattr("streams")?.len()?).unwrap_or(u32::MAX);
            let next_timer_in = next_timer_in(py, &connector)?;
            self.connector = Some(connector.unbind());
            Ok(Kind::Loaded(Loaded { topics, grids, streams, next_timer_in }))
        })
    }

    /// Runs the streams of the batch's topic over its decoded records; records that did not
    /// decode become bad records.
    pub(crate) fn process(&mut self, batch: &DecodedBatch) -> Result<Kind> {
        let _call = watchdog::Call::start();
        Python::attach(|py| {
            let connector = self.connector(py)?;
            let Some(decoder) = self.decoders.get(&batch.topic) else {
                // No stream reads it.
                return self.results(py, &connector);
            };
            let mut bad_records = Vec::new();
            let mut events = Vec::with_capacity(batch.messages.len());
            for message in &batch.messages {
                let raw = &message.raw;
                match &message.decoded {
                    Some(Ok((key, value))) => {
                        let built = decoder
                            .to_python(py, key)
                            .and_then(|key| Ok((key, decoder.to_python(py, value)?)));
                        match built {
                            Ok((key, value)) => events.push(Event {
                                key: key.unbind(),
                                value: value.unbind(),
                                partition: raw.partition,
                                offset: raw.offset,
                                timestamp: raw.timestamp,
                            }),
                            Err(error) => {
                                bad_records.push(bad_record(&batch.topic, raw, error.to_string()));
                            }
                        }
                    }
                    Some(Err(reason)) => {
                        bad_records.push(bad_record(&batch.topic, raw, reason.clone()));
                    }
                    // Decoded before the schema was known: cannot happen (see `Schemas`).
                    None => bad_records.push(bad_record(&batch.topic, raw, "no schema".into())),
                }
            }
            if !events.is_empty() {
                let topic = PyString::new(py, &batch.topic);
                let events = Py::new(py, EventBatch::new(topic.clone().unbind(), events))?;
                connector.call_method1("process_events", (topic, events))?;
            }
            let mut result = self.results(py, &connector)?;
            if let Kind::Result(result) = &mut result {
                // Records user code failed on carry their raw bytes too.
                if result.bad_records.iter().any(|bad| bad.key.is_none() && bad.value.is_none()) {
                    let by_offset: HashMap<(i32, i64), &RawMessage> = batch
                        .messages
                        .iter()
                        .map(|message| ((message.raw.partition, message.raw.offset), &message.raw))
                        .collect();
                    for bad in &mut result.bad_records {
                        if let Some(raw) = by_offset.get(&(bad.partition, bad.offset)) {
                            bad.key.clone_from(&raw.key);
                            bad.value.clone_from(&raw.value);
                        }
                    }
                }
                result.bad_records.splice(0..0, bad_records);
            }
            Ok(result)
        })
    }

    pub(crate) fn restore(&mut self, restore: RestoreGrid) -> Result<Kind> {
        let _call = watchdog::Call::start();
        Python::attach(|py| {
            let connector = self.connector(py)?;
            let columns = self.columns.get(&restore.grid).cloned().unwrap_or_default();
            let rows = PyDict::new(py);
            for row in restore.rows {
                let values = PyDict::new(py);
                for (column, value) in columns.iter().zip(&row.values) {
                    values.set_item(column, to_python(py, value)?)?;
                }
                rows.set_item(row.key, values)?;
            }
            connector.call_method1("restore", (restore.grid, rows))?;
            Ok(Kind::Result(BatchResult::default()))
        })
    }

    pub(crate) fn tick(&mut self) -> Result<Kind> {
        let _call = watchdog::Call::start();
        Python::attach(|py| {
            let connector = self.connector(py)?;
            connector.call_method0("run_due_timers")?;
            self.results(py, &connector)
        })
    }

    fn connector<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyAny>> {
        self.connector
            .as_ref()
            .map(|connector| connector.bind(py).clone())
            .ok_or_else(|| Error::Protocol("records before a successful Load".to_owned()))
    }

    /// Everything the last batch or tick produced.
    fn results(&self, py: Python<'_>, connector: &Bound<'_, PyAny>) -> Result<Kind> {
        let mut result = BatchResult::default();
        for (grid, rows) in cast_dict(&connector.call_method0("take_changes")?)? {
            let grid = grid.extract::<String>()?;
            let columns = self.columns.get(&grid).map(Vec::as_slice).unwrap_or_default();
            let mut changes = GridChanges { grid, ..GridChanges::default() };
            for (key, row) in cast_dict(&rows)? {
                let key = key.extract::<String>()?;
                if row.is_none() {
                    changes.deleted.push(key);
                    continue;
                }
                let row = cast_dict(&row)?;
                let values = columns
                    .iter()
                    .map(|column| match row.get_item(column)? {
                        Some(value) => to_value(&value),
                        None => Ok(null()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                changes.upserted.push(GridRow { key, values });
            }
            result.changes.push(changes);
        }
        for bad in connector.call_method0("take_bad_records")?.try_iter()? {
            let bad = bad?;
            result.bad_records.push(BadRecord {
                topic: bad.getattr("topic")?.extract()?,
                partition: bad.getattr("partition")?.extract()?,
                offset: bad.getattr("offset")?.extract()?,
                reason: text(&bad.getattr("reason")?)?,
                line: bad.getattr("line")?.extract()?,
                key: bad.getattr("key")?.extract()?,
                value: bad.getattr("value")?.extract()?,
            });
        }
        for log in connector.call_method0("take_logs")?.try_iter()? {
            let log = log?;
            result.logs.push(LogLine {
                level: text(&log.getattr("level")?)?,
                message: text(&log.getattr("message")?)?,
            });
        }
        result.next_timer_in = next_timer_in(py, connector)?;
        Ok(Kind::Result(result))
    }
}

/// A str from user code as UTF-8: lone surrogates (which UTF-8 cannot hold) become U+FFFD
/// instead of failing the batch.
fn text(object: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(object.cast::<PyString>()?.to_string_lossy().into_owned())
}

/// The innermost line of the user's module in an exception's traceback.
pub(crate) fn user_line(py: Python<'_>, error: &PyErr) -> Option<u32> {
    let user_file = audit::user_file();
    let mut line = None;
    let mut traceback = error.traceback(py).map(Bound::into_any);
    while let Some(current) = traceback.filter(|traceback| !traceback.is_none()) {
        let filename = current
            .getattr("tb_frame")
            .and_then(|frame| frame.getattr("f_code"))
            .and_then(|code| code.getattr("co_filename"))
            .and_then(|name| name.extract::<String>())
            .unwrap_or_default();
        if filename == user_file {
            line = current.getattr("tb_lineno").and_then(|line| line.extract::<u32>()).ok();
        }
        traceback = current.getattr("tb_next").ok();
    }
    line
}

fn bad_record(topic: &str, raw: &RawMessage, reason: String) -> BadRecord {
    BadRecord {
        topic: topic.to_owned(),
        partition: raw.partition,
        offset: raw.offset,
        reason,
        line: None,
        key: raw.key.clone(),
        value: raw.value.clone(),
    }
}

fn next_timer_in(py: Python<'_>, connector: &Bound<'_, PyAny>) -> Result<Option<f64>> {
    let due = connector.call_method0("next_timer_due")?.extract::<Option<f64>>()?;
    let Some(due) = due else { return Ok(None) };
    let now = py.import("time")?.call_method0("monotonic")?.extract::<f64>()?;
    Ok(Some((due - now).max(0.0)))
}

fn cast_dict<'a, 'py>(object: &'a Bound<'py, PyAny>) -> Result<&'a Bound<'py, PyDict>> {
    object.cast::<PyDict>().map_err(|error| Error::Python(error.to_string()))
}

fn c_string(text: &str) -> Result<CString> {
    CString::new(text).map_err(|error| Error::Python(error.to_string()))
}

fn null() -> Value {
    Value { kind: Some(value::Kind::Null(true)) }
}

/// A grid cell to the wire (the grid has checked it is a JSON scalar).
fn to_value(object: &Bound<'_, PyAny>) -> Result<Value> {
    let kind = if object.is_none() {
        value::Kind::Null(true)
    } else if let Ok(boolean) = object.cast::<PyBool>() {
        value::Kind::Bool(boolean.is_true())
    } else if object.cast::<PyInt>().is_ok() {
        value::Kind::Int(object.extract::<i64>()?)
    } else if object.cast::<PyFloat>().is_ok() {
        value::Kind::Float(object.extract::<f64>()?)
    } else if let Ok(text) = object.cast::<PyString>() {
        value::Kind::String(text.to_string_lossy().into_owned())
    } else {
        return Err(Error::Python(format!("a grid cell of type {}", object.get_type())));
    };
    Ok(Value { kind: Some(kind) })
}

fn to_python<'py>(py: Python<'py>, value: &Value) -> Result<Bound<'py, PyAny>> {
    Ok(match &value.kind {
        None | Some(value::Kind::Null(_)) => py.None().into_bound(py),
        Some(value::Kind::Bool(boolean)) => PyBool::new(py, *boolean).to_owned().into_any(),
        Some(value::Kind::Int(int)) => PyInt::new(py, *int).into_any(),
        Some(value::Kind::Float(float)) => PyFloat::new(py, *float).into_any(),
        Some(value::Kind::String(text)) => PyString::new(py, text).into_any(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/test_grid.py` holds the reference `Grid` to its behaviour and messages in plain
    /// CPython; here the same file runs against the native grid the connector uses.
    #[test]
    fn the_native_grid_passes_the_reference_grid_tests() {
        let _session = Session::start(Schemas::default()).unwrap();
        Python::attach(|py| -> PyResult<()> {
            let aerogrid = py.import("aerogrid")?;
            let native = py.import("aerogrid._native")?;
            assert!(aerogrid.getattr("Grid")?.is(&native.getattr("Grid")?), "the native grid");
            let tests = PyModule::from_code(
                py,
                &c_string(include_str!("../../connector/python/tests/test_grid.py")).unwrap(),
                c"test_grid.py",
                c"test_grid",
            )?;
            let unittest = py.import("unittest")?;
            let suite = unittest
                .getattr("defaultTestLoader")?
                .call_method1("loadTestsFromModule", (tests,))?;
            let output = py.import("io")?.getattr("StringIO")?.call0()?;
            let options = PyDict::new(py);
            options.set_item("stream", &output)?;
            options.set_item("verbosity", 2)?;
            let result = unittest
                .getattr("TextTestRunner")?
                .call((), Some(&options))?
                .call_method1("run", (suite,))?;
            let report: String = output.call_method0("getvalue")?.extract()?;
            assert!(result.getattr("testsRun")?.extract::<usize>()? >= 10, "{report}");
            assert!(result.call_method0("wasSuccessful")?.extract::<bool>()?, "{report}");
            Ok(())
        })
        .unwrap();
    }
}
