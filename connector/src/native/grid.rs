//! `aerogrid.Grid` in Rust: reading a row and setting one are the two calls a stream makes per
//! record, and in Python they cost more than the rest of the seed program's loop together.
//!
//! It does what the reference `Grid` in `aerogrid/__init__.py` does, message for message;
//! `connector/python/tests/test_grid.py` runs against both. Rows are Python dicts (column ->
//! value, in column order) in a dict keyed by the row's key; the rows changed since the
//! platform last took them are a second dict (None for a deleted row). Only shared borrows:
//! a row's default may call back into its grid.

use pyo3::{
    PyTraverseError, PyVisit,
    exceptions::{PyKeyError, PyTypeError, PyValueError},
    prelude::*,
    types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple},
};

#[pyclass(frozen, dict, module = "aerogrid", name = "Grid")]
pub(crate) struct Grid {
    #[pyo3(get)]
    name: Py<PyString>,
    #[pyo3(get)]
    columns: Py<PyList>,
    /// The columns as given, for checking rows (the list above is the user's to read).
    column_names: Vec<Py<PyString>>,
    default: Option<Py<PyAny>>,
    rows: Py<PyDict>,
    changed: Py<PyDict>,
}

#[pymethods]
impl Grid {
    #[new]
    #[pyo3(signature = (name, columns, default = None))]
    fn new(
        name: &Bound<'_, PyAny>,
        columns: &Bound<'_, PyAny>,
        default: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = name.py();
        let name = name
            .cast::<PyString>()
            .ok()
            .filter(|name| name.len().is_ok_and(|length| length > 0))
            .ok_or_else(|| PyTypeError::new_err("a grid name is a non-empty string"))?
            .clone();
        let columns = PyList::new(py, columns.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
        let mut column_names = Vec::new();
        for column in &columns {
            match column.cast::<PyString>() {
                Ok(text) if text.len()? > 0 => column_names.push(text.clone().unbind()),
                _ => break,
            }
        }
        if column_names.is_empty() || column_names.len() != columns.len() {
            return Err(PyTypeError::new_err(format!(
                "grid `{name}` needs a list of column names (non-empty strings)"
            )));
        }
        let distinct = pyo3::types::PyFrozenSet::new(py, &columns)?;
        if distinct.len() != columns.len() {
            return Err(PyValueError::new_err(format!("grid `{name}` names a column twice")));
        }
        if let Some(default) = &default
            && !default.is_none()
            && !default.is_callable()
        {
            return Err(PyTypeError::new_err(format!(
                "default of grid `{name}` must be a function returning a row, e.g. lambda: {{...}}"
            )));
        }
        Ok(Self {
            name: name.unbind(),
            columns: columns.unbind(),
            column_names,
            default: default.filter(|default| !default.is_none()).map(Bound::unbind),
            rows: PyDict::new(py).unbind(),
            changed: PyDict::new(py).unbind(),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.name)?;
        visit.call(&self.columns)?;
        for column in &self.column_names {
            visit.call(column)?;
        }
        visit.call(&self.default)?;
        visit.call(&self.rows)?;
        visit.call(&self.changed)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "<aerogrid.Grid {} columns={} rows={}>",
            self.name.bind(py).repr()?,
            self.columns.bind(py).repr()?,
            self.rows.bind(py).len()
        ))
    }

    fn __getitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let grid = slf.get();
        let key = grid.key(key)?;
        let values = match grid.rows.bind(slf.py()).get_item(&key)? {
            Some(row) => row.cast_into::<PyDict>()?,
            None => grid.default_row(slf.py())?,
        };
        row(slf, &key, &values)
    }

    #[pyo3(signature = (key, default = None))]
    fn get(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let grid = slf.get();
        let key = grid.key(key)?;
        match grid.rows.bind(slf.py()).get_item(&key)? {
            Some(values) => row(slf, &key, values.cast::<PyDict>()?),
            None => Ok(default.unwrap_or_else(|| slf.py().None())),
        }
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, row: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = key.py();
        let key = self.key(key)?;
        let checked = self.check_row(row)?;
        self.rows.bind(py).set_item(&key, &checked)?;
        self.changed.bind(py).set_item(&key, &checked)
    }

    /// A cell set through a row (`grid[key][column] = value`).
    fn _set_cell(
        &self,
        key: &Bound<'_, PyString>,
        column: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = key.py();
        self.check_cell(column, value)?;
        let rows = self.rows.bind(py);
        let row = match rows.get_item(key)? {
            Some(row) => row.cast_into::<PyDict>()?,
            None => {
                let row = self.default_row(py)?;
                rows.set_item(key, &row)?;
                row
            }
        };
        row.set_item(column, value)?;
        self.changed.bind(py).set_item(key, row)
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = key.py();
        let key = self.key(key)?;
        let rows = self.rows.bind(py);
        if !rows.contains(&key)? {
            return Err(PyKeyError::new_err(format!(
                "grid `{}` has no row {}",
                self.name.bind(py),
                key.repr()?
            )));
        }
        rows.del_item(&key)?;
        self.changed.bind(py).set_item(&key, py.None())
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        match self.key(key) {
            Ok(key) => self.rows.bind(key.py()).contains(key),
            Err(error) if error.is_instance_of::<PyTypeError>(key.py()) => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.rows.bind(py).len()
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.keys(py).try_iter()?.into_any().unbind())
    }

    fn keys<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.rows.bind(py).keys()
    }

    /// (key, row) for the keys there are now; each row as it is when the loop reaches it.
    fn items(slf: &Bound<'_, Self>) -> GridItems {
        let keys = slf.get().rows.bind(slf.py()).keys().iter().map(Bound::unbind).collect();
        GridItems { grid: slf.clone().unbind(), keys, next: 0 }
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let (rows, changed) = (self.rows.bind(py), self.changed.bind(py));
        for key in rows.keys() {
            changed.set_item(key, py.None())?;
        }
        rows.clear();
        Ok(())
    }

    // Platform side.

    /// The rows changed since the last call (None for deleted ones), as plain copies.
    fn _take_changes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let changed = self.changed.bind(py);
        let taken = PyDict::new(py);
        for (key, row) in changed {
            if row.is_none() {
                taken.set_item(key, row)?;
            } else {
                taken.set_item(key, row.cast::<PyDict>()?.copy()?)?;
            }
        }
        changed.clear();
        Ok(taken)
    }

    /// Loads rows recovered from the changelog, without reporting them as changes.
    fn _restore(&self, restored: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = restored.py();
        let rows = self.rows.bind(py);
        rows.clear();
        for (key, row) in restored {
            let values = PyDict::new(py);
            for column in &self.column_names {
                let column = column.bind(py);
                values.set_item(column, row.call_method1(pyo3::intern!(py, "get"), (column,))?)?;
            }
            rows.set_item(key, values)?;
        }
        self.changed.bind(py).clear();
        Ok(())
    }
}

impl Grid {
    /// A row's key as stored: a str, or an int written as one.
    fn key<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
        if let Ok(text) = key.cast::<PyString>() {
            return Ok(text.clone());
        }
        if key.is_instance_of::<PyInt>() && !key.is_instance_of::<PyBool>() {
            return key.str();
        }
        Err(PyTypeError::new_err(format!(
            "grid `{}` rows are keyed by strings, not {}",
            self.name.bind(key.py()),
            key.get_type().name()?
        )))
    }

    fn default_row<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        match &self.default {
            Some(default) => self.check_row(&default.bind(py).call0()?),
            None => {
                let row = PyDict::new(py);
                for column in &self.column_names {
                    row.set_item(column.bind(py), py.None())?;
                }
                Ok(row)
            }
        }
    }

    /// A copy of `row` with every column, in column order (None where it has none), after
    /// checking each cell.
    fn check_row<'py>(&self, row: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let py = row.py();
        let Ok(row) = row.cast::<PyDict>() else {
            return Err(PyTypeError::new_err(format!(
                "a row of grid `{}` is a dict of column values, not {}",
                self.name.bind(py),
                row.get_type().name()?
            )));
        };
        let mut values: Vec<Option<Bound<'py, PyAny>>> = vec![None; self.column_names.len()];
        for (column, value) in row {
            match self.column_index(&column) {
                Some(index) if is_plain_cell(&value) => values[index] = Some(value),
                // Not a column, or a cell that needs the full check (and its message).
                _ => {
                    self.check_cell(&column, &value)?;
                    let index = self.column_index(&column).expect("checked: a column");
                    values[index] = Some(value);
                }
            }
        }
        let checked = PyDict::new(py);
        for (column, value) in self.column_names.iter().zip(values) {
            checked.set_item(column.bind(py), value.unwrap_or_else(|| py.None().into_bound(py)))?;
        }
        Ok(checked)
    }

    fn column_index(&self, column: &Bound<'_, PyAny>) -> Option<usize> {
        // Column names in user code are usually the very objects given (interned literals).
        if let Some(index) = self.column_names.iter().position(|name| name.is(column)) {
            return Some(index);
        }
        let text = column.cast::<PyString>().ok()?.to_str().ok()?;
        self.column_names.iter().position(|name| name.bind(column.py()).to_str().ok() == Some(text))
    }

    fn no_such_column(&self, column: &Bound<'_, PyAny>) -> PyErr {
        let py = column.py();
        let columns: Vec<String> =
            self.column_names.iter().map(|column| column.bind(py).to_string()).collect();
        let column = match column.repr() {
            Ok(repr) => repr.to_string(),
            Err(error) => return error,
        };
        PyKeyError::new_err(format!(
            "grid `{}` has no column {column} (its columns: {})",
            self.name.bind(py),
            columns.join(", ")
        ))
    }

    fn check_cell(&self, column: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = column.py();
        let name = self.name.bind(py);
        if self.column_index(column).is_none() {
            return Err(self.no_such_column(column));
        }
        let is_int = value.is_instance_of::<PyInt>();
        let is_float = value.is_instance_of::<PyFloat>();
        if !(value.is_none() || value.is_instance_of::<PyString>() || is_int || is_float) {
            return Err(PyTypeError::new_err(format!(
                "grid cells hold str, int, float, bool or None; column `{column}` of grid `{name}` got {}",
                value.get_type().name()?
            )));
        }
        if is_int && !value.is_instance_of::<PyBool>() && value.extract::<i64>().is_err() {
            return Err(PyValueError::new_err(format!(
                "column `{column}` of grid `{name}` got {value}, beyond 64-bit integers"
            )));
        }
        if is_float && !value.extract::<f64>()?.is_finite() {
            return Err(PyValueError::new_err(format!(
                "column `{column}` of grid `{name}` got {value}, which JSON cannot carry"
            )));
        }
        Ok(())
    }
}

/// The cells a row holds nearly always, checked without a call: str, None, bool, a 64-bit int,
/// a finite float (exact types only; anything else takes the full check).
fn is_plain_cell(value: &Bound<'_, PyAny>) -> bool {
    value.is_none()
        || value.is_exact_instance_of::<PyString>()
        || value.is_exact_instance_of::<PyBool>()
        || (value.is_exact_instance_of::<PyInt>() && value.extract::<i64>().is_ok())
        || (value.is_exact_instance_of::<PyFloat>()
            && value.cast::<PyFloat>().is_ok_and(|float| float.value().is_finite()))
}

/// The user's view of a row: an `aerogrid.Row` holding a copy of `values`.
fn row(
    grid: &Bound<'_, Grid>,
    key: &Bound<'_, PyString>,
    values: &Bound<'_, PyDict>,
) -> PyResult<Py<PyAny>> {
    let row =
        Bound::new(grid.py(), Row { grid: grid.clone().unbind(), key: key.clone().unbind() })?;
    row.as_super().update(values.as_mapping())?;
    Ok(row.into_any().unbind())
}

/// `aerogrid.Row`: one row of a grid, as a dict; setting a cell writes it to the grid. Native
/// (as the grid is) because `grid[key]` makes one per read: a Python subclass of dict cost a
/// class call and two attribute writes, 0.2 us of the seed program's 1.5 us per record.
#[pyclass(extends = PyDict, frozen, module = "aerogrid", name = "Row")]
pub(crate) struct Row {
    grid: Py<Grid>,
    key: Py<PyString>,
}

#[pymethods]
impl Row {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.grid)?;
        visit.call(&self.key)
    }

    fn __setitem__(
        slf: &Bound<'_, Self>,
        column: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let row = slf.get();
        row.grid.get()._set_cell(row.key.bind(slf.py()), column, value)?;
        slf.as_super().set_item(column, value)
    }

    /// Only from this copy, as for a dict (a row keeps every column in the grid).
    fn __delitem__(slf: &Bound<'_, Self>, column: &Bound<'_, PyAny>) -> PyResult<()> {
        slf.as_super().del_item(column)
    }

    fn __missing__(&self, column: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.grid.get().no_such_column(column))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn update(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let cells = slf.py().get_type::<PyDict>().call(args, kwargs)?.cast_into::<PyDict>()?;
        for (column, value) in cells {
            Self::__setitem__(slf, &column, &value)?;
        }
        Ok(())
    }
}

/// What `Grid.items()` returns.
#[pyclass(module = "aerogrid._native")]
pub(crate) struct GridItems {
    grid: Py<Grid>,
    keys: Vec<Py<PyAny>>,
    next: usize,
}

#[pymethods]
impl GridItems {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<(Py<PyAny>, Py<PyAny>)>> {
        let Some(key) = self.keys.get(self.next) else { return Ok(None) };
        self.next += 1;
        let grid = self.grid.bind(py);
        let key = key.bind(py).cast::<PyString>()?.clone();
        // As the reference's generator: a row deleted during the loop is a KeyError.
        let Some(values) = grid.get().rows.bind(py).get_item(&key)? else {
            return Err(PyKeyError::new_err((key.unbind(),)));
        };
        Ok(Some((key.clone().into_any().unbind(), row(grid, &key, values.cast::<PyDict>()?)?)))
    }
}
