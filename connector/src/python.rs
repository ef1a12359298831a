//! The embedded interpreter and the calls into the driver (`aerogrid._driver`).

use std::{collections::HashMap, ffi::CString};

use aerogrid_proto::{
    runtime::v1::{
        Batch, BatchResult, GridChanges, GridRow, GridSpec, Load, LoadFailed, Loaded, LogLine,
        RestoreGrid, TopicSpec, connector_message::Kind,
    },
    v1::{Value, value},
};
use pyo3::{
    prelude::*,
    types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString},
};

use crate::{Error, Result};

/// The `aerogrid` package, compiled into the binary: the connector reads no file of ours.
const PACKAGE: &[(&str, &str, &str)] = &[
    ("aerogrid", "aerogrid/__init__.py", include_str!("../../runtime/python/aerogrid/__init__.py")),
    (
        "aerogrid._driver",
        "aerogrid/_driver.py",
        include_str!("../../runtime/python/aerogrid/_driver.py"),
    ),
];

pub(crate) struct Session {
    driver: Py<PyModule>,
    connector: Option<Py<PyAny>>,
    /// Column order of each grid, for the rows sent back.
    columns: HashMap<String, Vec<String>>,
}

impl Session {
    /// Starts the interpreter and imports the embedded package.
    pub(crate) fn start() -> Result<Self> {
        Python::initialize();
        Python::attach(|py| {
            let modules = py.import("sys")?.getattr("modules")?;
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
            let driver = py.import("aerogrid._driver")?.unbind();
            Ok(Self { driver, connector: None, columns: HashMap::new() })
        })
    }

    pub(crate) fn load(&mut self, load: Load) -> Result<Kind> {
        Python::attach(|py| {
            let driver = self.driver.bind(py);
            let filename =
                if load.filename.is_empty() { "main.py".to_owned() } else { load.filename };
            let connector = match driver.getattr("Connector")?.call1((load.source, filename)) {
                Ok(connector) => connector,
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
            let topics = app
                .getattr("topics")?
                .cast::<PyDict>()
                .map_err(|error| Error::Python(error.to_string()))?
                .keys()
                .iter()
                .map(|name| Ok(TopicSpec { name: name.extract::<String>()? }))
                .collect::<PyResult<Vec<_>>>()?;
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

    pub(crate) fn process(&mut self, batch: Batch) -> Result<Kind> {
        Python::attach(|py| {
            let connector = self.connector(py)?;
            let raw_message = self.driver.bind(py).getattr("RawMessage")?;
            let messages = PyList::empty(py);
            for message in batch.messages {
                let key = message.key.as_deref().map(|key| PyBytes::new(py, key));
                let value = message.value.as_deref().map(|value| PyBytes::new(py, value));
                messages.append(raw_message.call1((
                    key,
                    value,
                    message.partition,
                    message.offset,
                    message.timestamp,
                ))?)?;
            }
            connector.call_method1("process", (batch.topic, messages))?;
            self.results(py, &connector)
        })
    }

    pub(crate) fn restore(&mut self, restore: RestoreGrid) -> Result<Kind> {
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
            result.bad_records.push(aerogrid_proto::runtime::v1::BadRecord {
                topic: bad.getattr("topic")?.extract()?,
                partition: bad.getattr("partition")?.extract()?,
                offset: bad.getattr("offset")?.extract()?,
                reason: bad.getattr("reason")?.extract()?,
                line: bad.getattr("line")?.extract()?,
                key: bad.getattr("key")?.extract()?,
                value: bad.getattr("value")?.extract()?,
            });
        }
        for log in connector.call_method0("take_logs")?.try_iter()? {
            let log = log?;
            result.logs.push(LogLine {
                level: log.getattr("level")?.extract()?,
                message: log.getattr("message")?.extract()?,
            });
        }
        result.next_timer_in = next_timer_in(py, connector)?;
        Ok(Kind::Result(result))
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
        value::Kind::String(text.to_str()?.to_owned())
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
