use super::*;

/// `class Order(Record): product: str; quantity: int; note: Optional[str]; tags: list[str] = []`
fn orders() -> TopicSchema {
    TopicSchema {
        key: KeySpec::Str,
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
    orders().decode_value(Some(value.as_bytes())).unwrap_err()
}

#[test]
fn records_decode_with_coercion_and_defaults() {
    let decoded = orders().decode_value(Some(br#"{"product": 7, "quantity": "3", "extra": 1}"#));
    assert_eq!(
        decoded,
        Ok(Decoded::Record(
            0,
            vec![Decoded::Str("7".into()), Decoded::Int(3), Decoded::Null, Decoded::Default]
        ))
    );
    let decoded =
        orders().decode_value(Some(br#"{"product": "a", "quantity": 2.0, "tags": ["x", 1]}"#));
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
    assert_eq!(orders().decode_value(None), Err("the message has no value".into()));
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
        match schema.decode_value(Some(message.as_bytes())) {
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
        assert_eq!(schema.decode_value(Some(raw)), through_a_json_value(&schema, raw), "{message}");
    }
    let invalid_utf8 = b"{\"product\": \"a\", \"extra\": \"\xff\", \"quantity\": 1, \"price\": 1}";
    assert_eq!(
        schema.decode_value(Some(invalid_utf8)),
        through_a_json_value(&schema, invalid_utf8)
    );
}

#[test]
fn keys_decode_by_their_type() {
    let mut schema = orders();
    assert_eq!(schema.decode_key(Some(b"k1")), Ok(Decoded::Str("k1".into())));
    assert_eq!(schema.decode_key(Some(&[0xff])), Err("the key is not UTF-8 text".into()));
    schema.key = KeySpec::Int;
    assert_eq!(schema.decode_key(Some(b" -12 ")), Ok(Decoded::Int(-12)));
    assert_eq!(schema.decode_key(Some(b"1x")), Err("the key '1x' is not an integer".into()));
    schema.key = KeySpec::Ignore;
    assert_eq!(schema.decode_key(Some(b"anything")), Ok(Decoded::Null));
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
