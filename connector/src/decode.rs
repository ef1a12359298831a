//! Decoding messages off the interpreter's thread: raw key and value bytes to checked, coerced
//! values in the shape of the topic's declared types, ready to become Python objects.
//!
//! The rules and messages are those of `aerogrid._coerce` (the reference, which user code uses
//! when it builds Records itself); `connector/python/tests` and this module's tests pin both.

pub(crate) mod avro;
mod streamed;

use std::{collections::HashMap, sync::Arc};

use serde_json::Value as Json;

/// How a topic's keys or values are written (`app.topic(..., value_serializer=...)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// JSON, or the bytes or text as they are when the declared type is bytes or str.
    Plain,
    /// Avro in the schema registry's wire format.
    Avro,
    /// JSON in the schema registry's wire format (the schema is the producer's check).
    JsonSchema,
}

/// The writer schemas the node has sent, by registry id (or why one cannot be used).
pub(crate) type Writers = HashMap<u32, std::result::Result<Arc<avro::WriterSchema>, String>>;

/// How a topic's keys decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeySpec {
    Ignore,
    Bytes,
    Str,
    Int,
}

/// How a topic's values decode.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ValueSpec {
    Bytes,
    Str,
    /// A JSON object, as a dict.
    Object,
    /// A Record class (an index into `Schema::records`).
    Record(usize),
    /// A JSON number, coerced like a field of this type.
    Scalar(TypeSpec),
}

/// A field's declared type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TypeSpec {
    Any,
    Str,
    Int,
    Float,
    Bool,
    List(Box<TypeSpec>),
    /// A JSON array kept as it is (a bare `list` annotation).
    AnyList,
    Dict,
    Record(usize),
    /// `datetime.datetime` (ISO 8601 text; UTC when it has no offset), `datetime.date`
    /// (`YYYY-MM-DD`), `decimal.Decimal` (text or a number).
    Datetime,
    Date,
    Decimal,
    /// `Optional[...]` and unions: tried in order; `nullable` when one option is None.
    Union {
        options: Vec<TypeSpec>,
        nullable: bool,
    },
    /// An annotation the API does not support, with its repr.
    Unsupported(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldSpec {
    pub(crate) name: String,
    pub(crate) spec: TypeSpec,
    pub(crate) default: FieldDefault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldDefault {
    Required,
    /// The class's default value (kept on the Python side).
    Declared,
    /// An Optional field without a default is None.
    Null,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RecordSpec {
    pub(crate) class_name: String,
    pub(crate) fields: Vec<FieldSpec>,
}

/// What one topic's messages decode to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TopicSchema {
    pub(crate) key: KeySpec,
    pub(crate) value: ValueSpec,
    pub(crate) records: Vec<RecordSpec>,
    pub(crate) key_format: Format,
    pub(crate) value_format: Format,
}

/// A decoded value, checked against its type.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Null,
    Bool(bool),
    Int(i64),
    /// Integers beyond i64 (JSON allows them; Python ints are unbounded).
    BigInt(String),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Decoded>),
    /// Any JSON, converted as `json.loads` would.
    Json(Json),
    /// A Record: one entry per declared field, in declaration order.
    Record(usize, Vec<Decoded>),
    /// Microseconds since the epoch, UTC.
    Datetime(i64),
    /// Days since the epoch.
    Date(i32),
    /// A finite decimal number's text.
    Decimal(String),
    /// The field's declared default.
    Default,
}

type Result<T> = std::result::Result<T, String>;

/// An Avro datum in the registry's wire format, by the writer schema the node sent for its id.
fn read_avro(raw: &[u8], writers: &Writers, what: &str) -> Result<Json> {
    let (id, payload) = avro::framing(raw, what)?;
    match writers.get(&id) {
        Some(Ok(writer)) => writer.read(payload).map_err(|error| format!("schema {id}: {error}")),
        Some(Err(why)) => Err(format!("schema {id} cannot be read: {why}")),
        // The node sends every schema a batch names: a message naming none is not the app's.
        None => Err(format!("schema {id} is not known")),
    }
}

/// JSON in the registry's wire format.
fn framed_json(raw: &[u8], what: &str) -> Result<Json> {
    let (_, payload) = avro::framing(raw, what)?;
    serde_json::from_slice(payload).map_err(|error| format!("not JSON: {error}"))
}

impl TopicSchema {
    pub(crate) fn decode_key(&self, raw: Option<&[u8]>, writers: &Writers) -> Result<Decoded> {
        let Some(raw) = raw else { return Ok(Decoded::Null) };
        if self.key_format != Format::Plain && self.key != KeySpec::Ignore {
            let json = match self.key_format {
                Format::Avro => read_avro(raw, writers, "key")?,
                _ => framed_json(raw, "key")?,
            };
            return match (self.key, json) {
                (KeySpec::Str, Json::String(text)) => Ok(Decoded::Str(text)),
                (KeySpec::Int, Json::Number(number)) if number.is_i64() => {
                    Ok(Decoded::Int(number.as_i64().expect("checked")))
                }
                (KeySpec::Bytes, Json::String(text)) => Ok(Decoded::Bytes(text.into_bytes())),
                (_, other) => {
                    Err(format!("the key is {}, not a {:?} key", json_type(&other), self.key))
                }
            };
        }
        match self.key {
            KeySpec::Ignore => Ok(Decoded::Null),
            KeySpec::Bytes => Ok(Decoded::Bytes(raw.to_vec())),
            KeySpec::Str | KeySpec::Int => {
                let text =
                    std::str::from_utf8(raw).map_err(|_| "the key is not UTF-8 text".to_owned())?;
                if self.key == KeySpec::Str {
                    return Ok(Decoded::Str(text.to_owned()));
                }
                parse_int(text).ok_or_else(|| {
                    let shown: String = text.chars().take(40).collect();
                    format!("the key {} is not an integer", python_repr_str(&shown))
                })
            }
        }
    }

    pub(crate) fn decode_value(&self, raw: Option<&[u8]>, writers: &Writers) -> Result<Decoded> {
        match self.value_format {
            Format::Plain => self.decode_plain_value(raw),
            Format::JsonSchema => {
                let raw = raw.ok_or_else(|| "the message has no value".to_owned())?;
                self.decode_plain_value(Some(avro::framing(raw, "value")?.1))
            }
            Format::Avro => {
                let raw = raw.ok_or_else(|| "the message has no value".to_owned())?;
                if let ValueSpec::Record(index) = self.value {
                    // A record's fields straight into their places: no object built.
                    let (id, payload) = avro::framing(raw, "value")?;
                    if let Some(Ok(writer)) = writers.get(&id)
                        && let Some(values) =
                            writer.read_fields(payload, &self.records[index].fields)
                    {
                        let mut values = values.map_err(|error| format!("schema {id}: {error}"))?;
                        return self.fields(index, |position, _| values[position].take(), None);
                    }
                }
                self.value_of_json(read_avro(raw, writers, "value")?)
            }
        }
    }

    /// A value as the declared type takes it: JSON, or the bytes or text as they are.
    fn decode_plain_value(&self, raw: Option<&[u8]>) -> Result<Decoded> {
        if self.value == ValueSpec::Bytes {
            return Ok(raw.map_or(Decoded::Null, |raw| Decoded::Bytes(raw.to_vec())));
        }
        let raw = raw.ok_or_else(|| "the message has no value".to_owned())?;
        if self.value == ValueSpec::Str {
            let text =
                std::str::from_utf8(raw).map_err(|_| "the value is not UTF-8 text".to_owned())?;
            return Ok(Decoded::Str(text.to_owned()));
        }
        if let ValueSpec::Record(index) = self.value {
            // The record's fields straight from the text: no map of the object is built.
            let spec = &self.records[index];
            return match streamed::top_level(raw, &spec.fields)
                .map_err(|error| format!("the value is not JSON: {error}"))?
            {
                streamed::TopLevel::Fields(mut values) => {
                    self.fields(index, |position, _| values[position].take(), None)
                }
                streamed::TopLevel::Other(kind) => {
                    Err(format!("expected a JSON object for {}, got {kind}", spec.class_name))
                }
            };
        }
        let json: Json = serde_json::from_slice(raw)
            .map_err(|error| format!("the value is not JSON: {error}"))?;
        self.value_of_json(json)
    }

    /// A value read as JSON (or from Avro, as JSON), checked and coerced to the declared type.
    fn value_of_json(&self, json: Json) -> Result<Decoded> {
        match &self.value {
            ValueSpec::Object => match json {
                Json::Object(_) => Ok(Decoded::Json(json)),
                other => {
                    Err(format!("the value should be a JSON object, got {}", json_type(&other)))
                }
            },
            ValueSpec::Scalar(spec) => self.coerce(json, spec, &Path::Top("value")),
            ValueSpec::Record(index) => match json {
                Json::Object(_) => self.record(*index, json, None),
                other => Err(format!(
                    "expected an object for {}, got {}",
                    self.records[*index].class_name,
                    json_type(&other)
                )),
            },
            ValueSpec::Str => match json {
                Json::String(text) => Ok(Decoded::Str(text)),
                other => Err(format!("the value is {}, not a string", json_type(&other))),
            },
            ValueSpec::Bytes => match json {
                Json::String(text) => Ok(Decoded::Bytes(text.into_bytes())),
                other => Err(format!("the value is {}, not bytes", json_type(&other))),
            },
        }
    }

    /// `parent`: where the record sits inside another, for messages.
    fn record(&self, index: usize, json: Json, parent: Option<&Path<'_>>) -> Result<Decoded> {
        let Json::Object(mut object) = json else { unreachable!("checked by the caller") };
        self.fields(index, |_, field| object.remove(&field.name), parent)
    }

    /// A record from the JSON of each of its fields (`take`: the value of field number n, if the
    /// object has one), in declaration order.
    fn fields(
        &self,
        index: usize,
        mut take: impl FnMut(usize, &FieldSpec) -> Option<Json>,
        parent: Option<&Path<'_>>,
    ) -> Result<Decoded> {
        let spec = &self.records[index];
        let mut fields = Vec::with_capacity(spec.fields.len());
        for (position, field) in spec.fields.iter().enumerate() {
            let path = match parent {
                None => Path::Top(&field.name),
                Some(parent) => Path::Field(parent, &field.name),
            };
            let value = match take(position, field) {
                Some(value) => self.coerce(value, &field.spec, &path)?,
                None => match field.default {
                    FieldDefault::Declared => Decoded::Default,
                    FieldDefault::Null => Decoded::Null,
                    FieldDefault::Required => return Err(format!("missing field `{path}`")),
                },
            };
            fields.push(value);
        }
        // Unknown keys are ignored: producers add fields over time.
        Ok(Decoded::Record(index, fields))
    }

    /// `aerogrid._coerce`: `json` as `spec`, or the reason naming `path`.
    fn coerce(&self, json: Json, spec: &TypeSpec, path: &Path<'_>) -> Result<Decoded> {
        if let TypeSpec::Any = spec {
            return Ok(Decoded::Json(json));
        }
        if let TypeSpec::Union { options, nullable } = spec {
            if json.is_null() {
                return if *nullable {
                    Ok(Decoded::Null)
                } else {
                    Err(format!("field `{path}` is null"))
                };
            }
            let mut errors = Vec::new();
            for option in options {
                match self.coerce(json.clone(), option, path) {
                    Ok(value) => return Ok(value),
                    Err(error) => errors.push(error),
                }
            }
            return Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                format!("field `{path}`: {}", errors.join("; "))
            });
        }
        if json.is_null() {
            return Err(format!("field `{path}` is null"));
        }
        match spec {
            TypeSpec::List(item) => match json {
                Json::Array(items) => items
                    .into_iter()
                    .enumerate()
                    .map(|(index, value)| self.coerce(value, item, &Path::Item(path, index)))
                    .collect::<Result<Vec<_>>>()
                    .map(Decoded::List),
                other => Err(format!("field `{path}` should be a list, got {}", json_type(&other))),
            },
            TypeSpec::AnyList => match json {
                Json::Array(_) => Ok(Decoded::Json(json)),
                other => Err(format!("field `{path}` should be a list, got {}", json_type(&other))),
            },
            TypeSpec::Dict => match json {
                Json::Object(_) => Ok(Decoded::Json(json)),
                other => {
                    Err(format!("field `{path}` should be an object, got {}", json_type(&other)))
                }
            },
            TypeSpec::Record(index) => match json {
                Json::Object(_) => self.record(*index, json, Some(path)),
                other => {
                    Err(format!("field `{path}` should be an object, got {}", json_type(&other)))
                }
            },
            TypeSpec::Datetime => datetime_of(&json).ok_or_else(|| {
                format!(
                    "field `{path}` should be a date and time (ISO 8601), got {}",
                    describe(&json)
                )
            }),
            TypeSpec::Date => date_of(&json).ok_or_else(|| {
                format!("field `{path}` should be a date (YYYY-MM-DD), got {}", describe(&json))
            }),
            TypeSpec::Decimal => decimal_of(&json).ok_or_else(|| {
                format!("field `{path}` should be a decimal number, got {}", describe(&json))
            }),
            TypeSpec::Bool => match json {
                Json::Bool(value) => Ok(Decoded::Bool(value)),
                Json::String(text) if text.eq_ignore_ascii_case("true") => Ok(Decoded::Bool(true)),
                Json::String(text) if text.eq_ignore_ascii_case("false") => {
                    Ok(Decoded::Bool(false))
                }
                other => {
                    Err(format!("field `{path}` should be a boolean, got {}", json_type(&other)))
                }
            },
            TypeSpec::Int => match &json {
                Json::Bool(_) => Err(format!("field `{path}` should be an integer, got a boolean")),
                Json::Number(number) => {
                    if let Some(value) = number.as_i64() {
                        Ok(Decoded::Int(value))
                    } else if let Some(value) = number.as_u64() {
                        Ok(Decoded::BigInt(value.to_string()))
                    } else {
                        match number.as_f64() {
                            Some(value) if value.fract() == 0.0 && value.is_finite() => {
                                Ok(float_to_int(value))
                            }
                            _ => Err(format!(
                                "field `{path}` should be an integer, got {}",
                                describe(&json)
                            )),
                        }
                    }
                }
                Json::String(text) => parse_int(text).ok_or_else(|| {
                    format!("field `{path}` should be an integer, got {}", describe(&json))
                }),
                other => {
                    Err(format!("field `{path}` should be an integer, got {}", describe(other)))
                }
            },
            TypeSpec::Float => match &json {
                Json::Bool(_) => Err(format!("field `{path}` should be a number, got a boolean")),
                Json::Number(number) => Ok(Decoded::Float(number.as_f64().unwrap_or(f64::NAN))),
                Json::String(text) => parse_float(text).map(Decoded::Float).ok_or_else(|| {
                    format!("field `{path}` should be a number, got {}", describe(&json))
                }),
                other => Err(format!("field `{path}` should be a number, got {}", describe(other))),
            },
            TypeSpec::Str => match json {
                Json::String(text) => Ok(Decoded::Str(text)),
                Json::Number(number) => Ok(Decoded::Str(python_number_text(&number))),
                other => {
                    Err(format!("field `{path}` should be a string, got {}", json_type(&other)))
                }
            },
            TypeSpec::Unsupported(annotation) => {
                Err(format!("field `{path}` has an unsupported type {annotation}"))
            }
            TypeSpec::Any | TypeSpec::Union { .. } => unreachable!("handled above"),
        }
    }
}

/// Where a value sits in a message, for error messages: made into text only when one is
/// needed, so decoding a good record builds no strings for it.
enum Path<'a> {
    Top(&'a str),
    Field(&'a Path<'a>, &'a str),
    Item(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Top(name) => formatter.write_str(name),
            Self::Field(parent, name) => write!(formatter, "{parent}.{name}"),
            Self::Item(parent, index) => write!(formatter, "{parent}[{index}]"),
        }
    }
}

fn float_to_int(value: f64) -> Decoded {
    #[allow(clippy::cast_possible_truncation, reason = "checked to be in range")]
    if value.abs() < 9.2e18 {
        Decoded::Int(value as i64)
    } else {
        Decoded::BigInt(format!("{value:.0}"))
    }
}

/// `int(text.strip())` for decimal text: sign, digits, single underscores between digits.
fn parse_int(text: &str) -> Option<Decoded> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    let clean: String = trimmed.chars().filter(|c| *c != '_').collect();
    Some(match clean.parse::<i64>() {
        Ok(value) => Decoded::Int(value),
        Err(_) => Decoded::BigInt(clean.trim_start_matches('+').to_owned()),
    })
}

/// `float(text.strip())` for the forms JSON producers send.
fn parse_float(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    if matches!(unsigned, "inf" | "infinity" | "nan") {
        return lower.parse::<f64>().ok().or(Some(if lower.starts_with('-') {
            f64::NEG_INFINITY
        } else if unsigned == "nan" {
            f64::NAN
        } else {
            f64::INFINITY
        }));
    }
    if trimmed.is_empty() || !trimmed.chars().all(|c| c.is_ascii_digit() || "+-.eE_".contains(c)) {
        return None;
    }
    trimmed.replace('_', "").parse::<f64>().ok()
}

/// `str(number)` as Python writes it.
fn python_number_text(number: &serde_json::Number) -> String {
    if number.is_i64() || number.is_u64() {
        return number.to_string();
    }
    python_float_repr(number.as_f64().unwrap_or(f64::NAN))
}

fn python_float_repr(value: f64) -> String {
    let text = format!("{value:?}");
    // Rust writes `1e20` where Python writes `1e+20`.
    match text.split_once('e') {
        Some((mantissa, exponent)) if !exponent.starts_with('-') => {
            format!("{mantissa}e+{exponent}")
        }
        _ => text,
    }
}

/// `aerogrid._json_type`.
pub(crate) fn json_type(json: &Json) -> &'static str {
    match json {
        Json::Object(_) => "an object",
        Json::Array(_) => "an array",
        Json::String(_) => "a string",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::Null => "null",
    }
}

/// `aerogrid._describe`: the JSON type and a short repr.
/// As `aerogrid._datetime_of`: ISO 8601 text with a `T`, `Z` or an offset or none (UTC).
fn datetime_of(json: &Json) -> Option<Decoded> {
    let Json::String(text) = json else { return None };
    if !text.contains(['T', 't']) {
        return None;
    }
    let text = text.replace('Z', "+00:00");
    let with_offset = ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M%:z"]
        .iter()
        .find_map(|format| chrono::DateTime::parse_from_str(&text, format).ok());
    let utc = chrono::DateTime::parse_from_rfc3339(&text)
        .ok()
        .or(with_offset)
        .map(|moment| moment.with_timezone(&chrono::Utc))
        .ok_or(())
        .or_else(|()| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
                .iter()
                .find_map(|format| chrono::NaiveDateTime::parse_from_str(&text, format).ok())
                .map(|naive| naive.and_utc())
                .ok_or(())
        })
        .ok()?;
    Some(Decoded::Datetime(utc.timestamp_micros()))
}

fn date_of(json: &Json) -> Option<Decoded> {
    let Json::String(text) = json else { return None };
    if text.len() != 10 {
        return None;
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    i32::try_from((date - epoch).num_days()).ok().map(Decoded::Date)
}

/// Finite decimal text (`-12.30`, `1e3`), or a JSON number as Python writes it.
fn decimal_of(json: &Json) -> Option<Decoded> {
    let text = match json {
        Json::String(text) => text.trim().to_owned(),
        Json::Number(number) => python_number_text(number),
        _ => return None,
    };
    let body = text.strip_prefix(['-', '+']).unwrap_or(&text);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (body, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit() || c == '_');
    let valid = !(whole.is_empty() && fraction.is_empty())
        && digits(whole)
        && digits(fraction)
        && exponent.is_none_or(|exponent| {
            let exponent = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
            !exponent.is_empty() && exponent.chars().all(|c| c.is_ascii_digit())
        });
    valid.then_some(Decoded::Decimal(text))
}

fn describe(json: &Json) -> String {
    let text = match json {
        Json::String(text) => python_repr_str(text),
        Json::Bool(true) => "True".to_owned(),
        Json::Bool(false) => "False".to_owned(),
        Json::Null => "None".to_owned(),
        Json::Number(number) => python_number_text(number),
        other => other.to_string(),
    };
    let text = if text.chars().count() > 40 {
        format!("{}...", text.chars().take(37).collect::<String>())
    } else {
        text
    };
    format!("{} {text}", json_type(json))
}

/// `repr(text)` for the common cases.
fn python_repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut repr = String::with_capacity(text.len() + 2);
    repr.push(quote);
    for c in text.chars() {
        match c {
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\r' => repr.push_str("\\r"),
            '\t' => repr.push_str("\\t"),
            c if c == quote => {
                repr.push('\\');
                repr.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                repr.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => repr.push(c),
        }
    }
    repr.push(quote);
    repr
}

#[cfg(test)]
mod tests;
