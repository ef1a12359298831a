use super::*;

/// No writer schemas (JSON topics need none).
static NONE: std::sync::LazyLock<Writers> = std::sync::LazyLock::new(Writers::new);

/// `class Order(Record): product: str; quantity: int; note: Optional[str]; tags: list[str] = []`
fn orders() -> TopicSchema {
    TopicSchema {
        key: KeySpec::Str,
        key_format: Format::Plain,
        value_format: Format::Plain,
        value: ValueSpec::Record(0),
        records: vec![RecordSpec {
            class_name: "Order".into(),
            fields: vec![
                FieldSpec {
                    name: "product".into(),
                    spec: TypeSpec::Str,
                    default: FieldDefault::Required,
                },
                FieldSpec {
                    name: "quantity".into(),
                    spec: TypeSpec::Int,
                    default: FieldDefault::Required,
                },
                FieldSpec {
                    name: "note".into(),
                    spec: TypeSpec::Union { options: vec![TypeSpec::Str], nullable: true },
                    default: FieldDefault::Null,
                },
                FieldSpec {
                    name: "tags".into(),
                    spec: TypeSpec::List(Box::new(TypeSpec::Str)),
                    default: FieldDefault::Declared,
                },
            ],
        }],
    }
}

fn error(value: &str) -> String {
    orders().decode_value(Some(value.as_bytes()), &NONE).unwrap_err()
}

#[test]
fn records_decode_with_coercion_and_defaults() {
    let decoded =
        orders().decode_value(Some(br#"{"product": 7, "quantity": "3", "extra": 1}"#), &NONE);
    assert_eq!(
        decoded,
        Ok(Decoded::Record(
            0,
            vec![Decoded::Str("7".into()), Decoded::Int(3), Decoded::Null, Decoded::Default]
        ))
    );
    let decoded = orders()
        .decode_value(Some(br#"{"product": "a", "quantity": 2.0, "tags": ["x", 1]}"#), &NONE);
    assert_eq!(
        decoded,
        Ok(Decoded::Record(
            0,
            vec![
                Decoded::Str("a".into()),
                Decoded::Int(2),
                Decoded::Null,
                Decoded::List(vec![Decoded::Str("x".into()), Decoded::Str("1".into())])
            ]
        ))
    );
}

#[test]
fn bad_values_say_why_as_the_python_reference_does() {
    assert_eq!(error(r#"{"quantity": 1}"#), "missing field `product`");
    assert_eq!(
        error(r#"{"product": "a", "quantity": "many"}"#),
        "field `quantity` should be an integer, got a string 'many'"
    );
    assert_eq!(
        error(r#"{"product": "a", "quantity": true}"#),
        "field `quantity` should be an integer, got a boolean"
    );
    assert_eq!(
        error(r#"{"product": "a", "quantity": 1.5}"#),
        "field `quantity` should be an integer, got a number 1.5"
    );
    assert_eq!(error(r#"{"product": null, "quantity": 1}"#), "field `product` is null");
    assert_eq!(
        error(r#"{"product": "a", "quantity": 1, "tags": "x"}"#),
        "field `tags` should be a list, got a string"
    );
    assert_eq!(
        error(r#"{"product": "a", "quantity": 1, "tags": [null]}"#),
        "field `tags[0]` is null"
    );
    assert_eq!(error("[1]"), "expected a JSON object for Order, got an array");
    assert!(error("{nope").starts_with("the value is not JSON: "));
    assert_eq!(orders().decode_value(None, &NONE), Err("the message has no value".into()));
    let long = format!(r#"{{"product": "a", "quantity": "{}"}}"#, "x".repeat(50));
    assert_eq!(
        error(&long),
        format!("field `quantity` should be an integer, got a string '{}...", "x".repeat(36))
    );
}

/// `record_cases.json`'s classes: `Order` (0) with a list of `Line` (1).
fn case_orders() -> TopicSchema {
    let field = |name: &str, spec, default| FieldSpec { name: name.into(), spec, default };
    TopicSchema {
        key: KeySpec::Str,
        key_format: Format::Plain,
        value_format: Format::Plain,
        value: ValueSpec::Record(0),
        records: vec![
            RecordSpec {
                class_name: "Order".into(),
                fields: vec![
                    field("product", TypeSpec::Str, FieldDefault::Required),
                    field("quantity", TypeSpec::Int, FieldDefault::Required),
                    field("price", TypeSpec::Float, FieldDefault::Required),
                    field("express", TypeSpec::Bool, FieldDefault::Declared),
                    field(
                        "note",
                        TypeSpec::Union { options: vec![TypeSpec::Str], nullable: true },
                        FieldDefault::Null,
                    ),
                    field("tags", TypeSpec::List(Box::new(TypeSpec::Str)), FieldDefault::Declared),
                    field(
                        "lines",
                        TypeSpec::List(Box::new(TypeSpec::Record(1))),
                        FieldDefault::Declared,
                    ),
                ],
            },
            RecordSpec {
                class_name: "Line".into(),
                fields: vec![
                    field("sku", TypeSpec::Str, FieldDefault::Required),
                    field("price", TypeSpec::Float, FieldDefault::Required),
                ],
            },
        ],
    }
}

/// A decoded value as the reference's `to_dict()` gives it, as JSON.
fn plain(decoded: &Decoded, records: &[RecordSpec], defaults: &Json, field: &str) -> Json {
    match decoded {
        Decoded::Null => Json::Null,
        Decoded::Bool(value) => (*value).into(),
        Decoded::Int(value) => (*value).into(),
        Decoded::Float(value) => (*value).into(),
        Decoded::Str(value) => value.clone().into(),
        Decoded::Json(value) => value.clone(),
        Decoded::List(items) => {
            items.iter().map(|item| plain(item, records, defaults, field)).collect()
        }
        Decoded::Record(index, values) => records[*index]
            .fields
            .iter()
            .zip(values)
            .map(|(spec, value)| (spec.name.clone(), plain(value, records, defaults, &spec.name)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Decoded::Default => defaults[field].clone(),
        other => panic!("no case decodes to {other:?}"),
    }
}

#[test]
fn the_shared_cases_decode_as_the_python_reference_says() {
    let file: Json =
        serde_json::from_str(include_str!("../../../connector/python/tests/record_cases.json"))
            .unwrap();
    let schema = case_orders();
    let cases = file["cases"].as_array().unwrap();
    assert!(cases.len() > 20);
    for case in cases {
        let message = case["message"].as_str().unwrap();
        match schema.decode_value(Some(message.as_bytes()), &NONE) {
            Ok(decoded) => {
                let record = plain(&decoded, &schema.records, &file["defaults"], "");
                assert_eq!(record, case["record"], "{message}");
            }
            Err(reason) => match case["error_starts_with"].as_str() {
                Some(start) => assert!(reason.starts_with(start), "{message}: {reason}"),
                None => assert_eq!(Some(reason.as_str()), case["error"].as_str(), "{message}"),
            },
        }
    }
}

/// What the record path made of a message before it read records field by field.
fn through_a_json_value(schema: &TopicSchema, raw: &[u8]) -> Result<Decoded> {
    let json: Json =
        serde_json::from_slice(raw).map_err(|error| format!("the value is not JSON: {error}"))?;
    match json {
        Json::Object(_) => schema.record(0, json, None),
        other => Err(format!("expected a JSON object for Order, got {}", json_type(&other))),
    }
}

#[test]
fn a_record_read_from_its_text_is_the_record_its_json_value_makes() {
    let file: Json =
        serde_json::from_str(include_str!("../../../connector/python/tests/record_cases.json"))
            .unwrap();
    let schema = case_orders();
    let shared =
        file["cases"].as_array().unwrap().iter().map(|case| case["message"].as_str().unwrap());
    let more = [
        r#"{"product": "a", "product": "b", "quantity": 1, "price": 1}"#,
        r#"{"pro\u0064uct": "a", "quantity": 1, "price": 1}"#,
        r#"{"product": "a", "extra": {"deep": [1, {"x": null}]}, "quantity": 2, "price": 1.5}"#,
        r#"{"product": "a", "extra": "\ud800", "quantity": 1, "price": 1}"#,
        r#"{"product": "a", "quantity": 1, "price": 1} trailing"#,
        r#"{"product": "a", "quantity": 1,}"#,
        "[1, {\"x\": 2}]",
        "\"text\"",
        "3",
        "-1.5e3",
        "null",
        "true",
        "",
        "{",
    ];
    for message in shared.chain(more) {
        let raw = message.as_bytes();
        assert_eq!(
            schema.decode_value(Some(raw), &NONE),
            through_a_json_value(&schema, raw),
            "{message}"
        );
    }
    let invalid_utf8 = b"{\"product\": \"a\", \"extra\": \"\xff\", \"quantity\": 1, \"price\": 1}";
    assert_eq!(
        schema.decode_value(Some(invalid_utf8), &NONE),
        through_a_json_value(&schema, invalid_utf8)
    );
}

#[test]
fn keys_decode_by_their_type() {
    let mut schema = orders();
    assert_eq!(schema.decode_key(Some(b"k1"), &NONE), Ok(Decoded::Str("k1".into())));
    assert_eq!(schema.decode_key(Some(&[0xff]), &NONE), Err("the key is not UTF-8 text".into()));
    schema.key = KeySpec::Int;
    assert_eq!(schema.decode_key(Some(b" -12 "), &NONE), Ok(Decoded::Int(-12)));
    assert_eq!(schema.decode_key(Some(b"1x"), &NONE), Err("the key '1x' is not an integer".into()));
    schema.key = KeySpec::Ignore;
    assert_eq!(schema.decode_key(Some(b"anything"), &NONE), Ok(Decoded::Null));
}

#[test]
fn numbers_read_as_python_reads_them() {
    assert_eq!(parse_int("1_000"), Some(Decoded::Int(1000)));
    assert_eq!(
        parse_int("99999999999999999999"),
        Some(Decoded::BigInt("99999999999999999999".into()))
    );
    assert_eq!(parse_int("1__0"), None);
    assert_eq!(parse_float(" 2.5e3 "), Some(2500.0));
    assert_eq!(parse_float("abc"), None);
    assert_eq!(python_float_repr(1e20), "1e+20");
    assert_eq!(python_float_repr(0.1), "0.1");
    assert_eq!(python_float_repr(3.0), "3.0");
}

/// `orders()` read from Avro in the registry's wire format.
fn avro_orders() -> TopicSchema {
    TopicSchema { value_format: Format::Avro, ..orders() }
}

/// A writer schema as the node would send it, and datums of it in the wire format.
fn writer(id: u32, schema: &str) -> (Writers, apache_avro::Schema) {
    let parsed = apache_avro::Schema::parse_str(schema).unwrap();
    let mut writers = Writers::new();
    writers.insert(id, avro::WriterSchema::parse(schema).map(Arc::new));
    (writers, parsed)
}

fn framed(id: u32, schema: &apache_avro::Schema, value: apache_avro::types::Value) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend(id.to_be_bytes());
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema).build().unwrap();
    bytes.extend(datum.write_value_to_vec(value).unwrap());
    bytes
}

#[test]
fn avro_records_decode_as_their_json_does_matched_by_name() {
    use apache_avro::types::Value;
    // The writer has a field the Record does not declare, lacks `note` and `tags`, and puts
    // its fields in another order.
    let (writers, schema) = writer(
        7,
        r#"{"type": "record", "name": "Order", "fields": [
            {"name": "quantity", "type": "int"},
            {"name": "extra", "type": {"type": "array", "items": "long"}},
            {"name": "product", "type": "string"}]}"#,
    );
    let value = Value::Record(vec![
        ("quantity".into(), Value::Int(3)),
        ("extra".into(), Value::Array(vec![Value::Long(1), Value::Long(-2)])),
        ("product".into(), Value::String("apple".into())),
    ]);
    let raw = framed(7, &schema, value);
    let json = orders().decode_value(Some(br#"{"product": "apple", "quantity": 3}"#), &NONE);
    assert_eq!(avro_orders().decode_value(Some(&raw), &writers), json);

    // A union with null, an enum and a map read into what the Record declares.
    let (writers, schema) = writer(
        8,
        r#"{"type": "record", "name": "Order", "fields": [
            {"name": "product", "type": {"type": "enum", "name": "Fruit", "symbols": ["apple", "pear"]}},
            {"name": "quantity", "type": "long"},
            {"name": "note", "type": ["null", "string"]},
            {"name": "tags", "type": {"type": "array", "items": "string"}}]}"#,
    );
    let value = Value::Record(vec![
        ("product".into(), Value::Enum(1, "pear".into())),
        ("quantity".into(), Value::Long(5)),
        ("note".into(), Value::Union(0, Box::new(Value::Null))),
        ("tags".into(), Value::Array(vec![Value::String("ripe".into())])),
    ]);
    let json = orders().decode_value(
        Some(br#"{"product": "pear", "quantity": 5, "note": null, "tags": ["ripe"]}"#),
        &NONE,
    );
    assert_eq!(avro_orders().decode_value(Some(&framed(8, &schema, value)), &writers), json);
}

#[test]
fn avro_that_cannot_be_read_says_why() {
    let (writers, schema) = writer(
        7,
        r#"{"type": "record", "name": "Order", "fields": [{"name": "product", "type": "string"}, {"name": "quantity", "type": "int"}]}"#,
    );
    let value = apache_avro::types::Value::Record(vec![
        ("product".into(), apache_avro::types::Value::String("a".into())),
        ("quantity".into(), apache_avro::types::Value::Int(1)),
    ]);
    let raw = framed(7, &schema, value);
    let schema = avro_orders();
    let fails =
        |raw: &[u8], writers: &Writers| schema.decode_value(Some(raw), writers).unwrap_err();
    assert!(fails(br#"{"product": "a"}"#, &writers).contains("no magic byte 0 and schema id"));
    assert_eq!(fails(&[0, 0, 0, 0, 9, 2, 97], &writers), "schema 9 is not known");
    assert_eq!(fails(&raw[..raw.len() - 1], &writers), "schema 7: the Avro datum ends early");
    let mut longer = raw.clone();
    longer.push(0);
    assert_eq!(fails(&longer, &writers), "schema 7: 1 bytes after the Avro datum");
    // A block of a billion items in a few bytes is refused, not looped over.
    let (writers, _) = writer(
        3,
        r#"{"type": "record", "name": "Order", "fields": [{"name": "product", "type": "string"}, {"name": "quantity", "type": "int"}, {"name": "tags", "type": {"type": "array", "items": "null"}}]}"#,
    );
    let mut hostile = vec![0, 0, 0, 0, 3, 2, b'a', 2];
    hostile.extend([0x80, 0xa8, 0xd6, 0xb9, 0x07]);
    assert!(
        fails(&hostile, &writers).contains("block of 1000000000 items"),
        "{}",
        fails(&hostile, &writers)
    );
    // A schema the node sent that does not parse: its messages say so.
    let mut writers = Writers::new();
    writers.insert(4, avro::WriterSchema::parse("{not a schema").map(Arc::new));
    assert!(
        fails(&[0, 0, 0, 0, 4, 0], &writers)
            .starts_with("schema 4 cannot be read: the Avro schema")
    );
}

#[test]
fn dates_times_and_decimals_read_from_json_text_as_the_reference_reads_them() {
    let field =
        |name: &str, spec| FieldSpec { name: name.into(), spec, default: FieldDefault::Required };
    let schema = TopicSchema {
        records: vec![RecordSpec {
            class_name: "Trade".into(),
            fields: vec![
                field("at", TypeSpec::Datetime),
                field("day", TypeSpec::Date),
                field("price", TypeSpec::Decimal),
            ],
        }],
        ..orders()
    };
    let decoded = schema.decode_value(
        Some(br#"{"at": "2026-12-08T01:02:03.5+01:00", "day": "2026-12-08", "price": "12.30"}"#),
        &NONE,
    );
    let at =
        chrono::DateTime::parse_from_rfc3339("2026-12-08T00:02:03.5Z").unwrap().timestamp_micros();
    assert_eq!(
        decoded,
        Ok(Decoded::Record(
            0,
            vec![Decoded::Datetime(at), Decoded::Date(20_795), Decoded::Decimal("12.30".into())]
        ))
    );
    let naive = schema.decode_value(
        Some(br#"{"at": "2026-12-08T00:02:03.5", "day": "2026-12-08", "price": 1.5}"#),
        &NONE,
    );
    assert_eq!(
        naive,
        Ok(Decoded::Record(
            0,
            vec![Decoded::Datetime(at), Decoded::Date(20_795), Decoded::Decimal("1.5".into())]
        ))
    );
    for (message, says) in [
        (
            r#"{"at": "yesterday", "day": "2026-12-08", "price": 1}"#,
            "field `at` should be a date and time (ISO 8601), got a string 'yesterday'",
        ),
        (
            r#"{"at": "2026-12-08T00:00Z", "day": "2026-12-08T00:00", "price": 1}"#,
            "field `day` should be a date (YYYY-MM-DD)",
        ),
        (
            r#"{"at": "2026-12-08T00:00Z", "day": "2026-12-08", "price": "NaN"}"#,
            "field `price` should be a decimal number",
        ),
    ] {
        let error = schema.decode_value(Some(message.as_bytes()), &NONE).unwrap_err();
        assert!(error.starts_with(says), "{error}");
    }
}

#[test]
fn avro_that_would_make_far_more_than_its_size_is_refused() {
    let schema = avro_orders();
    let fails =
        |raw: &[u8], writers: &Writers| schema.decode_value(Some(raw), writers).unwrap_err();
    // Blocks of nulls, each as long as what is left allows, one after another: a billion items
    // from a few kilobytes, refused once the datum has made a few items per byte.
    let (writers, _) = writer(
        3,
        r#"{"type": "record", "name": "Order", "fields": [{"name": "product", "type": "string"}, {"name": "quantity", "type": "int"}, {"name": "tags", "type": {"type": "array", "items": "null"}}]}"#,
    );
    let mut hostile = vec![0, 0, 0, 0, 3, 2, b'a', 2];
    for _ in 0..1000 {
        hostile.extend([0xd0, 0x0f]); // a block of 1000 nulls (zig-zag 2000)
    }
    hostile.push(0);
    assert!(
        fails(&hostile, &writers).contains("makes far more than its size"),
        "{}",
        fails(&hostile, &writers)
    );
    // An enum whose one symbol is long, named by one-byte indexes.
    let symbol = "s".repeat(200_000);
    let schema_text = format!(
        r#"{{"type": "record", "name": "Order", "fields": [{{"name": "product", "type": "string"}}, {{"name": "quantity", "type": "int"}}, {{"name": "tags", "type": {{"type": "array", "items": {{"type": "enum", "name": "E", "symbols": ["{symbol}"]}}}}}}]}}"#
    );
    let (writers, _) = writer(4, &schema_text);
    let mut hostile = vec![0, 0, 0, 0, 4, 2, b'a', 2, 0x90, 0x03]; // a block of 200 items
    hostile.extend([0; 200]);
    hostile.push(0);
    assert!(
        fails(&hostile, &writers).contains("makes far more than its size"),
        "{}",
        fails(&hostile, &writers)
    );
}
