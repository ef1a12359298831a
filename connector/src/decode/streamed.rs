//! A message that should be a Record, read field by field from its text: the object's keys are
//! matched against the declared fields as they are read, so no map of the object (keys copied,
//! hashed and looked up again) is built. Each field's value is still read whole, as the rest of
//! `decode` coerces it; what the message says is exactly what `serde_json::Value` would hold.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::FieldSpec;

/// The top of a message.
pub(super) enum TopLevel {
    /// An object: the JSON of each declared field it has (the last, when a key repeats).
    Fields(Vec<Option<Json>>),
    /// Not an object: what it is ("an array", ...).
    Other(&'static str),
}

/// Reads `raw` (all of it: trailing text is an error, as for `serde_json::from_slice`).
pub(super) fn top_level(raw: &[u8], fields: &[FieldSpec]) -> serde_json::Result<TopLevel> {
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let top = TopSeed { fields }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(top)
}

struct TopSeed<'a> {
    fields: &'a [FieldSpec],
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = TopLevel;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<TopLevel, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = TopLevel;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut values = vec![None; self.fields.len()];
        while let Some(position) = map.next_key_seed(FieldSeed { fields: self.fields })? {
            // Unknown keys are read whole too (and dropped): a message is valid JSON or not,
            // whichever fields the app declares.
            let value: Json = map.next_value()?;
            if let Some(position) = position {
                values[position] = Some(value);
            }
        }
        Ok(TopLevel::Fields(values))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<Json>()?.is_some() {}
        Ok(TopLevel::Other("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("null"))
    }
}

/// A key of the object: the position of the declared field it names, if any.
struct FieldSeed<'a> {
    fields: &'a [FieldSpec],
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.fields.iter().position(|field| field.name == key))
    }
}
