//! A real connector process (`aerogrid connector`) driven over its pipe protocol.

use crate::support;

use aerogrid_proto::{
    runtime::v1::{LoadFailed, Loaded, RestoreGrid, Tick, connector_message::Kind, node_message},
    v1::{Value, value},
};
use support::{
    connector::ConnectorProcess,
    registry::{avro_order, zigzag},
};

const SEED: &str = include_str!("../../../connector/python/tests/seed.py");

fn int(value: i64) -> Value {
    Value { kind: Some(value::Kind::Int(value)) }
}

#[test]
fn seed_program_runs_over_the_pipe() {
    let mut connector = ConnectorProcess::start();
    let Kind::Loaded(Loaded { topics, grids, streams, .. }) = connector.load(SEED) else {
        panic!("the seed program loads")
    };
    assert_eq!(topics.iter().map(|topic| topic.name.as_str()).collect::<Vec<_>>(), ["orders"]);
    assert_eq!(
        (grids[0].name.as_str(), grids[0].columns.as_slice()),
        ("product_sum", &["units_sold".to_owned()][..])
    );
    assert_eq!(streams, 1);

    let result = connector.batch(
        "orders",
        &[
            br#"{"product": "apple", "quantity": 2}"#,
            b"not json",
            br#"{"product": "apple", "quantity": 3}"#,
            br#"{"product": "pear", "quantity": 1}"#,
        ],
    );
    let changes = &result.changes[0];
    assert_eq!(changes.grid, "product_sum");
    let mut rows: Vec<_> =
        changes.upserted.iter().map(|row| (row.key.as_str(), row.values.clone())).collect();
    rows.sort_by_key(|(key, _)| *key);
    assert_eq!(rows, [("apple", vec![int(5)]), ("pear", vec![int(1)])]);
    assert_eq!(result.bad_records.len(), 1);
    assert_eq!(result.bad_records[0].offset, 1);
    assert_eq!(result.bad_records[0].value.as_deref(), Some(&b"not json"[..]));

    // Rows restored from a changelog carry on.
    let restored = connector.send(node_message::Kind::Restore(RestoreGrid {
        grid: "product_sum".into(),
        rows: vec![aerogrid_proto::runtime::v1::GridRow {
            key: "plum".into(),
            values: vec![int(40)],
        }],
    }));
    assert!(matches!(restored, Kind::Result(_)));
    let result = connector.batch("orders", &[br#"{"product": "plum", "quantity": 2}"#]);
    assert_eq!(result.changes[0].upserted[0].values, [int(42)]);
}

#[test]
fn load_failures_name_the_line() {
    let mut connector = ConnectorProcess::start();
    let Kind::LoadFailed(LoadFailed { message, line }) =
        connector.load("import aerogrid\napp = aerogrid.App('a')\nx = 1 / 0\n")
    else {
        panic!("a module that raises does not load")
    };
    assert_eq!(line, Some(3));
    assert_eq!(message, "ZeroDivisionError: division by zero (line 3)");
}

#[test]
fn user_output_becomes_log_lines_and_cannot_break_the_protocol() {
    let mut connector = ConnectorProcess::start();
    let source = "import os, aerogrid\napp = aerogrid.App('a')\nt = app.topic('t', value_type=str)\n\
                  @app.stream(t)\nasync def f(s):\n    async for v in s:\n        print('got', v)\n        os.write(1, b'garbage on fd 1')\n\
                  @app.timer(0.01)\ndef tick():\n    print('tick')\n";
    assert!(matches!(connector.load(source), Kind::Loaded(_)));
    let result = connector.batch("t", &[b"hello"]);
    assert_eq!(
        result
            .logs
            .iter()
            .map(|log| (log.level.as_str(), log.message.as_str()))
            .collect::<Vec<_>>(),
        [("info", "got hello")]
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    let Kind::Result(result) = connector.send(node_message::Kind::Tick(Tick {})) else {
        panic!("a tick has a result")
    };
    assert_eq!(result.logs[0].message, "tick");
}

/// Decoding happens in the connector's reading thread (Rust); what user code sees must be what
/// the API promises: coerced types, nested Records, defaults never shared, event metadata, and
/// bad records with their reasons and raw bytes.
#[test]
fn records_decode_as_declared_and_failures_keep_raw_bytes() {
    let mut connector = ConnectorProcess::start();
    let source = r#"import aerogrid
from typing import Optional
app = aerogrid.App('shapes')
class Line(aerogrid.Record):
    sku: str
    qty: int = 1
class Order(aerogrid.Record):
    id: int
    lines: list[Line]
    note: Optional[str]
    tags: list[str] = []
orders = app.topic('orders', key_type=str, value_type=Order)
seen = app.Grid('seen', columns=['lines', 'qty', 'note', 'tags', 'where'])
@app.stream(orders)
async def run(stream):
    async for key, value, topic, partition, offset, timestamp in stream.events():
        if value.id == 13:
            raise ValueError('unlucky')
        value.tags.append('x')
        seen[key] = {'lines': len(value.lines), 'qty': sum(line.qty for line in value.lines),
                     'note': value.note, 'tags': ','.join(value.tags), 'where': f'{topic}/{partition}@{offset}'}
"#;
    assert!(matches!(connector.load(source), Kind::Loaded(_)));
    let result = connector.batch(
        "orders",
        &[
            br#"{"id": "7", "lines": [{"sku": "a"}, {"sku": "b", "qty": 2.0}]}"#,
            br#"{"id": 8, "lines": [], "note": "hi", "tags": ["t"]}"#,
            br#"{"id": 13, "lines": []}"#,
            br#"{"id": 9, "lines": [{"qty": 1}]}"#,
            br#"{"id": 10, "lines": []}"#,
        ],
    );
    let text = |text: &str| Value { kind: Some(value::Kind::String(text.into())) };
    let null = Value { kind: Some(value::Kind::Null(true)) };
    let mut rows: Vec<_> = result.changes[0]
        .upserted
        .iter()
        .map(|row| (row.key.as_str(), row.values.clone()))
        .collect();
    rows.sort_by_key(|(key, _)| *key);
    assert_eq!(
        rows,
        [
            ("k0", vec![int(2), int(3), null.clone(), text("x"), text("orders/0@0")]),
            ("k1", vec![int(0), int(0), text("hi"), text("t,x"), text("orders/0@1")]),
            ("k4", vec![int(0), int(0), null, text("x"), text("orders/0@4")]),
        ]
    );
    let mut bad: Vec<_> = result
        .bad_records
        .iter()
        .map(|bad| {
            (bad.offset, bad.reason.as_str(), bad.line, bad.value.as_deref().unwrap_or_default())
        })
        .collect();
    bad.sort_by_key(|(offset, ..)| *offset);
    assert_eq!(
        bad,
        [
            (
                2,
                "ValueError: unlucky (line 18, in run)",
                Some(18),
                &br#"{"id": 13, "lines": []}"#[..]
            ),
            (3, "missing field `lines[0].sku`", None, &br#"{"id": 9, "lines": [{"qty": 1}]}"#[..]),
        ]
    );
}

#[test]
fn the_seed_program_over_avro_sums_what_it_sums_over_json() {
    let program = SEED.replace(
        "app.topic('orders', key_type=str, value_type=Order)",
        "app.topic('orders', key_type=str, value_type=Order, value_serializer='avro')",
    );
    let mut connector = ConnectorProcess::start();
    let Kind::Loaded(Loaded { topics, .. }) = connector.load(&program) else {
        panic!("the program loads")
    };
    assert_eq!(
        (topics[0].key_serializer.as_str(), topics[0].value_serializer.as_str()),
        ("json", "avro")
    );
    let schema = aerogrid_proto::runtime::v1::WriterSchema {
        id: 42,
        schema_type: "AVRO".into(),
        schema: r#"{"type": "record", "name": "Order", "fields": [{"name": "product", "type": "string"}, {"name": "quantity", "type": "int"}]}"#.into(),
    };
    let (apple, pear, apple_again) =
        (avro_order(42, "apple", 2), avro_order(42, "pear", 1), avro_order(42, "apple", 3));
    let json = br#"{"product": "apple", "quantity": 2}"#;
    let result =
        connector.batch_with_schemas("orders", &[&apple, &pear, json, &apple_again], vec![schema]);
    assert_eq!(result.changes.len(), 1, "{:?}", result.bad_records);
    let mut rows: Vec<_> = result.changes[0]
        .upserted
        .iter()
        .map(|row| (row.key.as_str(), row.values.clone()))
        .collect();
    rows.sort_by_key(|(key, _)| *key);
    assert_eq!(rows, [("apple", vec![int(5)]), ("pear", vec![int(1)])]);
    // JSON on an Avro topic is a bad record with the reason; the schema stays known.
    assert_eq!(result.bad_records.len(), 1);
    assert!(result.bad_records[0].reason.contains("no magic byte 0"), "{:?}", result.bad_records);
    let result = connector.batch("orders", &[&avro_order(42, "pear", 4)]);
    assert_eq!(result.changes[0].upserted[0].values, [int(5)]);
}

#[test]
fn a_serializer_the_connector_does_not_decode_fails_the_load_with_the_reason() {
    let program =
        SEED.replace("value_type=Order)", "value_type=Order, value_serializer='protobuf')");
    let mut connector = ConnectorProcess::start();
    let Kind::LoadFailed(LoadFailed { message, .. }) = connector.load(&program) else {
        panic!("protobuf is not decoded yet")
    };
    assert!(
        message.contains("topic `orders`: the `protobuf` serializer is not supported yet"),
        "{message}"
    );
}

#[test]
fn avro_logical_types_become_datetimes_dates_and_decimals() {
    let program = "import aerogrid, datetime, decimal\n\
        app = aerogrid.App('logical')\n\
        class Trade(aerogrid.Record):\n    at: datetime.datetime\n    day: datetime.date\n    price: decimal.Decimal\n    id: str\n    local: datetime.datetime\n\
        trades = app.topic('trades', value_type=Trade, value_serializer='avro')\n\
        seen = app.Grid('seen', columns=['at', 'day', 'price', 'id', 'local', 'kinds'])\n\
        @app.stream(trades)\n\
        async def record(stream):\n    async for trade in stream:\n        \
        seen['t'] = {'at': trade.at.isoformat(), 'day': trade.day.isoformat(), 'price': str(trade.price), 'id': trade.id, \
        'local': trade.local.isoformat(), 'kinds': ' '.join(type(v).__name__ for v in (trade.at, trade.day, trade.price))}\n";
    let mut connector = ConnectorProcess::start();
    assert!(matches!(connector.load(program), Kind::Loaded(_)));
    let schema = r#"{"type": "record", "name": "Trade", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}}]}"#;
    let uuid = "123e4567-e89b-12d3-a456-426614174000";
    let mut value = vec![0, 0, 0, 0, 5];
    value.extend(zigzag(86_400_500)); // 1970-01-02T00:00:00.5Z
    value.extend(zigzag(19_700)); // 2023-12-09
    value.extend(zigzag(2));
    value.extend([0xfb, 0x32]); // -1230, scale 2
    value.extend(zigzag(uuid.len() as i64));
    value.extend(uuid.as_bytes());
    value.extend(zigzag(1_000_001)); // 1970-01-01T00:00:01.000001, no zone
    let writer = aerogrid_proto::runtime::v1::WriterSchema {
        id: 5,
        schema_type: "AVRO".into(),
        schema: schema.into(),
    };
    let result = connector.batch_with_schemas("trades", &[&value], vec![writer]);
    assert!(result.bad_records.is_empty(), "{:?}", result.bad_records);
    let text = |value: &Value| match &value.kind {
        Some(value::Kind::String(text)) => text.clone(),
        other => panic!("{other:?}"),
    };
    let row: Vec<String> = result.changes[0].upserted[0].values.iter().map(text).collect();
    assert_eq!(
        row,
        [
            "1970-01-02T00:00:00.500000+00:00",
            "2023-12-09",
            "-12.30",
            uuid,
            "1970-01-01T00:00:01.000001+00:00",
            "datetime date Decimal",
        ]
    );
}
