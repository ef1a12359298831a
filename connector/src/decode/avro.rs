//! Avro in the schema registry's wire format: a zero byte, the writer schema's id (4 bytes, big
//! endian), then the datum in Avro's binary encoding. The node fetches writer schemas from the
//! registry and sends them with the batches that need them; the datum is read by its writer
//! schema into JSON values, which the topic's declared types then check and coerce as they do
//! JSON messages (fields matched by name: a field the writer does not have takes the Record's
//! default, one the Record does not declare is read past).

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};
use serde_json::{Map, Number, Value as Json};

type Result<T> = std::result::Result<T, String>;

/// Nesting of one datum beyond which it is refused (a recursive schema could nest without end).
const MAX_DEPTH: usize = 64;
/// Largest decimal scale read (38 digits is what 128 bits hold).
const MAX_SCALE: usize = 38;

thread_local! {
    /// What one datum may still make: items (arrays and maps; an item may take no byte, a
    /// `null`) and bytes of text (an enum index of one byte names a symbol of any length).
    static BUDGET: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// A datum of `length` bytes may make a few items per byte and 64 bytes of text per byte (at
/// least 1 MiB): far more than real data does, far less than a hostile schema could.
fn reset_budget(length: usize) {
    BUDGET.set((length.saturating_mul(4) + 1024, length.saturating_mul(64).max(1 << 20)));
}

fn spend(items: usize, bytes: usize) -> Result<()> {
    let (items_left, bytes_left) = BUDGET.get();
    match (items_left.checked_sub(items), bytes_left.checked_sub(bytes)) {
        (Some(items_left), Some(bytes_left)) => {
            BUDGET.set((items_left, bytes_left));
            Ok(())
        }
        _ => Err("the Avro datum makes far more than its size (empty items or long names)".into()),
    }
}

/// A writer schema, parsed, with its named types for references.
#[derive(Debug)]
pub(crate) struct WriterSchema {
    schema: Schema,
    names: HashMap<Name, Schema>,
}

impl WriterSchema {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let schema =
            Schema::parse_str(text).map_err(|error| format!("the Avro schema: {error}"))?;
        let mut names = HashMap::new();
        collect_names(&schema, &mut names);
        Ok(Self { schema, names })
    }

    /// The datum as JSON; for a record at the top, its fields by name.
    pub(crate) fn read(&self, mut datum: &[u8]) -> Result<Json> {
        reset_budget(datum.len());
        let value = self.value(&self.schema, &mut datum, 0)?;
        if !datum.is_empty() {
            return Err(format!("{} bytes after the Avro datum", datum.len()));
        }
        Ok(value)
    }

    /// The datum of a record schema as the values of `fields` (by name; None where the writer
    /// has no such field), without building an object: the common case of a Record topic.
    /// `None` when the writer's schema is not a record.
    pub(crate) fn read_fields(
        &self,
        mut datum: &[u8],
        fields: &[super::FieldSpec],
    ) -> Option<Result<Vec<Option<Json>>>> {
        let Ok(Schema::Record(record)) = self.resolve(&self.schema) else { return None };
        reset_budget(datum.len());
        let mut read = || {
            let mut values: Vec<Option<Json>> = (0..fields.len()).map(|_| None).collect();
            for field in &record.fields {
                let value = self.value(&field.schema, &mut datum, 1)?;
                if let Some(position) = fields.iter().position(|wanted| wanted.name == field.name) {
                    values[position] = Some(value);
                }
            }
            if !datum.is_empty() {
                return Err(format!("{} bytes after the Avro datum", datum.len()));
            }
            Ok(values)
        };
        Some(read())
    }

    fn resolve<'s>(&'s self, schema: &'s Schema) -> Result<&'s Schema> {
        match schema {
            Schema::Ref { name } => {
                self.names.get(name).ok_or_else(|| format!("the Avro schema has no type `{name}`"))
            }
            other => Ok(other),
        }
    }

    fn value(&self, schema: &Schema, input: &mut &[u8], depth: usize) -> Result<Json> {
        if depth > MAX_DEPTH {
            return Err(format!("the Avro datum nests deeper than {MAX_DEPTH}"));
        }
        let schema = self.resolve(schema)?;
        Ok(match schema {
            Schema::Null => Json::Null,
            Schema::Boolean => match take(input, 1)?[0] {
                0 => Json::Bool(false),
                1 => Json::Bool(true),
                other => return Err(format!("an Avro boolean byte is 0 or 1, not {other}")),
            },
            Schema::Int | Schema::Long | Schema::TimeMillis | Schema::TimeMicros => {
                Json::from(long(input)?)
            }
            // Logical types as the text the declared type reads (`datetime`, `date`, `Decimal`
            // take it; `str` keeps it): ISO 8601, UTC.
            Schema::Date => {
                let days = long(input)?;
                let date = chrono::DateTime::from_timestamp(days.saturating_mul(86_400), 0)
                    .ok_or_else(|| format!("Avro date {days} is out of range"))?;
                Json::String(date.format("%Y-%m-%d").to_string())
            }
            Schema::TimestampMillis | Schema::LocalTimestampMillis => {
                timestamp(long(input)?.checked_mul(1000), schema)?
            }
            Schema::TimestampMicros | Schema::LocalTimestampMicros => {
                timestamp(Some(long(input)?), schema)?
            }
            Schema::TimestampNanos | Schema::LocalTimestampNanos => {
                timestamp(Some(long(input)?.div_euclid(1000)), schema)?
            }
            Schema::Decimal(decimal) => {
                let size = match &decimal.inner {
                    apache_avro::schema::InnerDecimalSchema::Bytes => length(input)?,
                    apache_avro::schema::InnerDecimalSchema::Fixed(fixed) => fixed.size,
                };
                Json::String(decimal_text(take(input, size)?, decimal.scale)?)
            }
            Schema::Uuid(apache_avro::schema::UuidSchema::Fixed(_)) => {
                Json::String(uuid_text(take(input, 16)?))
            }
            Schema::Uuid(apache_avro::schema::UuidSchema::Bytes) => {
                let length = length(input)?;
                Json::String(uuid_text(take(input, length)?))
            }
            Schema::Float => {
                let bytes: [u8; 4] = take(input, 4)?.try_into().expect("4 bytes");
                number(f64::from(f32::from_le_bytes(bytes)))?
            }
            Schema::Double => {
                let bytes: [u8; 8] = take(input, 8)?.try_into().expect("8 bytes");
                number(f64::from_le_bytes(bytes))?
            }
            Schema::String | Schema::Uuid(_) => Json::String(string(input)?),
            Schema::Bytes | Schema::BigDecimal => {
                let length = length(input)?;
                Json::String(String::from_utf8_lossy(take(input, length)?).into_owned())
            }
            Schema::Fixed(fixed) | Schema::Duration(fixed) => {
                spend(0, fixed.size)?;
                Json::String(String::from_utf8_lossy(take(input, fixed.size)?).into_owned())
            }
            Schema::Enum(enumeration) => {
                let index = long(input)?;
                let symbol = usize::try_from(index)
                    .ok()
                    .and_then(|index| enumeration.symbols.get(index))
                    .ok_or_else(|| {
                        format!("Avro enum {} has no symbol {index}", enumeration.name)
                    })?;
                spend(0, symbol.len())?;
                Json::String(symbol.clone())
            }
            Schema::Union(union) => {
                let index = long(input)?;
                let branch = usize::try_from(index)
                    .ok()
                    .and_then(|index| union.variants().get(index))
                    .ok_or_else(|| format!("an Avro union has no branch {index}"))?;
                self.value(branch, input, depth + 1)?
            }
            Schema::Array(array) => {
                let mut items = Vec::new();
                blocks(input, |input| {
                    spend(1, 0)?;
                    items.push(self.value(&array.items, input, depth + 1)?);
                    Ok(())
                })?;
                Json::Array(items)
            }
            Schema::Map(map) => {
                let mut entries = Map::new();
                blocks(input, |input| {
                    spend(1, 0)?;
                    let key = string(input)?;
                    entries.insert(key, self.value(&map.types, input, depth + 1)?);
                    Ok(())
                })?;
                Json::Object(entries)
            }
            Schema::Record(record) => {
                let mut fields = Map::new();
                for field in &record.fields {
                    spend(0, field.name.len())?;
                    fields.insert(field.name.clone(), self.value(&field.schema, input, depth + 1)?);
                }
                Json::Object(fields)
            }
            Schema::Ref { .. } => unreachable!("resolved above"),
        })
    }
}

/// Microseconds since the epoch as ISO 8601 text: with `+00:00` for a timestamp, without for a
/// local one.
fn timestamp(micros: Option<i64>, schema: &Schema) -> Result<Json> {
    let moment = micros
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(|| "an Avro timestamp is out of range".to_owned())?;
    let local = matches!(
        schema,
        Schema::LocalTimestampMillis | Schema::LocalTimestampMicros | Schema::LocalTimestampNanos
    );
    let format = if local { "%Y-%m-%dT%H:%M:%S%.6f" } else { "%Y-%m-%dT%H:%M:%S%.6f+00:00" };
    Ok(Json::String(moment.format(format).to_string()))
}

/// An Avro decimal (big-endian two's complement, `scale` digits after the point) as text.
fn decimal_text(bytes: &[u8], scale: usize) -> Result<String> {
    if scale > MAX_SCALE {
        return Err(format!("an Avro decimal's scale of {scale} is beyond {MAX_SCALE}"));
    }
    if bytes.len() > 16 {
        return Err(format!("an Avro decimal of {} bytes is beyond 128 bits", bytes.len()));
    }
    let negative = bytes.first().is_some_and(|first| first & 0x80 != 0);
    let mut wide = [if negative { 0xff } else { 0 }; 16];
    wide[16 - bytes.len()..].copy_from_slice(bytes);
    let unscaled = i128::from_be_bytes(wide);
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return Ok(format!("{sign}{digits}"));
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    Ok(format!("{sign}{whole}.{fraction}"))
}

fn uuid_text(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Every named type of `schema` (records, enums, fixed), for references to them.
fn collect_names(schema: &Schema, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(record) => {
            names.insert(record.name.clone(), schema.clone());
            for field in &record.fields {
                collect_names(&field.schema, names);
            }
        }
        Schema::Enum(enumeration) => {
            names.insert(enumeration.name.clone(), schema.clone());
        }
        Schema::Fixed(fixed) => {
            names.insert(fixed.name.clone(), schema.clone());
        }
        Schema::Array(array) => collect_names(&array.items, names),
        Schema::Map(map) => collect_names(&map.types, names),
        Schema::Union(union) => {
            for variant in union.variants() {
                collect_names(variant, names);
            }
        }
        _ => {}
    }
}

/// The schema id and the payload of a message in the registry's wire format.
/// `what`: `key` or `value`, for the message.
pub(crate) fn framing<'a>(raw: &'a [u8], what: &str) -> Result<(u32, &'a [u8])> {
    match raw {
        [0, a, b, c, d, payload @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        _ => Err(format!(
            "the {what} is not in the schema registry's wire format (no magic byte 0 and schema id)"
        )),
    }
}

fn take<'a>(input: &mut &'a [u8], count: usize) -> Result<&'a [u8]> {
    if input.len() < count {
        return Err("the Avro datum ends early".into());
    }
    let (taken, rest) = input.split_at(count);
    *input = rest;
    Ok(taken)
}

/// A zig-zag varint (Avro's `int` and `long`).
fn long(input: &mut &[u8]) -> Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = take(input, 1)?[0];
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            #[allow(clippy::cast_possible_wrap, reason = "zig-zag decoding")]
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err("an Avro number is longer than 10 bytes".into())
}

fn length(input: &mut &[u8]) -> Result<usize> {
    let length = long(input)?;
    usize::try_from(length).map_err(|_| format!("an Avro length is negative ({length})"))
}

fn string(input: &mut &[u8]) -> Result<String> {
    let length = length(input)?;
    let bytes = take(input, length)?;
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| "an Avro string is not UTF-8".into())
}

fn number(value: f64) -> Result<Json> {
    Number::from_f64(value).map(Json::Number).ok_or_else(|| format!("{value} is not a JSON number"))
}

/// Array and map blocks: a count (negative: followed by the block's size in bytes), its items,
/// until a count of 0. Each item takes at least a byte of what is left, or the count is refused
/// (a count of a billion nulls would otherwise loop in a message of a few bytes).
fn blocks(input: &mut &[u8], mut item: impl FnMut(&mut &[u8]) -> Result<()>) -> Result<()> {
    loop {
        let mut count = long(input)?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            count = count.checked_neg().ok_or("an Avro block count is out of range")?;
            length(input)?;
        }
        let count = usize::try_from(count).map_err(|_| "an Avro block count is out of range")?;
        if count > input.len() + 1 {
            return Err(format!("an Avro block of {count} items in {} bytes", input.len()));
        }
        for _ in 0..count {
            item(input)?;
        }
    }
}
