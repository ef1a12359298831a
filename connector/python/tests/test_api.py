"""The user API and the driver, in plain CPython: the seed program, records, grids, streams,
bad records, user exceptions, timers, logs."""

import json
import random
import re
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aerogrid  # noqa: E402
from aerogrid._driver import Connector, LoadError, RawMessage  # noqa: E402

SEED = (Path(__file__).parent / "seed.py").read_text()


def messages(values, start=0, partition=0):
    return [
        RawMessage(f"k{start + index}".encode(), value if isinstance(value, bytes) else json.dumps(value).encode(), partition, start + index, None)
        for index, value in enumerate(values)
    ]


class ConnectorTest(unittest.TestCase):
    def load(self, source):
        connector = Connector(source)
        self.addCleanup(connector.close)
        return connector


class SeedProgram(ConnectorTest):
    def test_seed_program_sums_units_per_product(self):
        connector = self.load(SEED)
        rng = random.Random(7)
        orders = [{"product": f"p{rng.randrange(50)}", "quantity": rng.randrange(1, 10)} for _ in range(10_000)]
        expected = {}
        for order in orders:
            expected[order["product"]] = expected.get(order["product"], 0) + order["quantity"]
        for start in range(0, len(orders), 1000):
            connector.process("orders", messages(orders[start : start + 1000], start))
        changes = connector.take_changes()["product_sum"]
        self.assertEqual({key: row["units_sold"] for key, row in changes.items()}, expected)
        self.assertEqual(connector.take_bad_records(), [])
        self.assertEqual(connector.take_changes(), {}, "changes are taken once")

    def test_restored_grid_continues_where_it_was(self):
        connector = self.load(SEED)
        connector.restore("product_sum", {"apple": {"units_sold": 10}})
        connector.process("orders", messages([{"product": "apple", "quantity": 5}]))
        self.assertEqual(connector.take_changes(), {"product_sum": {"apple": {"units_sold": 15}}})


class BadInput(ConnectorTest):
    def test_undecodable_messages_become_bad_records_and_processing_goes_on(self):
        connector = self.load(SEED)
        batch = messages(
            [
                b"not json",
                {"product": "apple"},
                {"product": "apple", "quantity": "many"},
                [1, 2],
                {"product": "apple", "quantity": "3"},
            ]
        )
        connector.process("orders", batch)
        bad = connector.take_bad_records()
        self.assertEqual([record.offset for record in bad], [0, 1, 2, 3])
        self.assertIn("not JSON", bad[0].reason)
        self.assertEqual(bad[0].value, b"not json", "the raw bytes are kept")
        self.assertEqual(bad[1].reason, "missing field `quantity`")
        self.assertEqual(bad[2].reason, "field `quantity` should be an integer, got a string 'many'")
        self.assertIn("expected a JSON object", bad[3].reason)
        self.assertEqual(connector.take_changes(), {"product_sum": {"apple": {"units_sold": 3}}}, "'3' is coerced")

    def test_an_exception_in_user_code_names_the_line_and_the_stream_goes_on(self):
        source = SEED.replace(
            "        units_sold = product_sum",
            "        if order.quantity == 0:\n            raise ValueError('zero')\n        units_sold = product_sum",
        )
        connector = self.load(source)
        connector.process("orders", messages([{"product": "a", "quantity": 1}, {"product": "a", "quantity": 0}, {"product": "a", "quantity": 2}]))
        bad = connector.take_bad_records()
        self.assertEqual(len(bad), 1)
        self.assertEqual(bad[0].offset, 1)
        self.assertEqual(bad[0].line, 18)
        self.assertEqual(bad[0].reason, "ValueError: zero (line 18, in sum_orders)")
        self.assertEqual(connector.take_changes(), {"product_sum": {"a": {"units_sold": 3}}})

    def test_unknown_column_is_a_clear_error(self):
        connector = self.load(SEED.replace("{ 'units_sold': units_sold }", "{ 'units': units_sold }"))
        connector.process("orders", messages([{"product": "a", "quantity": 1}]))
        (bad,) = connector.take_bad_records()
        self.assertIn("grid `product_sum` has no column 'units' (its columns: units_sold)", bad.reason)
        self.assertEqual(bad.line, 18)


class Loading(ConnectorTest):
    def test_syntax_error_has_its_line(self):
        with self.assertRaises(LoadError) as raised:
            Connector("import aerogrid\napp = aerogrid.App('x')\ndef broken(:\n")
        self.assertEqual(raised.exception.line, 3)

    def test_timers_run_every_millisecond_to_a_year(self):
        for seconds in ["float('inf')", "float('nan')", "0", "0.0001", "1e19", "-1", "True"]:
            with self.assertRaises(LoadError, msg=seconds) as raised:
                Connector(f"import aerogrid\napp = aerogrid.App('x')\n@app.timer({seconds})\ndef t(): pass\n")
            self.assertIn("@app.timer takes 0.001 to 3.1536e+07 seconds", raised.exception.message)
            self.assertEqual(raised.exception.line, 3)

    def test_an_app_is_required_and_only_one(self):
        with self.assertRaises(LoadError) as raised:
            Connector("import aerogrid\n")
        self.assertIn("creates no aerogrid.App", raised.exception.message)
        with self.assertRaises(LoadError) as raised:
            Connector("import aerogrid\na = aerogrid.App('a')\nb = aerogrid.App('b')\n")
        self.assertEqual(raised.exception.line, 3)
        self.assertIn("exactly one aerogrid.App", raised.exception.message)

    def test_records_may_use_postponed_annotations(self):
        connector = self.load(
            "from __future__ import annotations\nimport aerogrid\napp = aerogrid.App('a')\n"
            "class Inner(aerogrid.Record):\n    n: int\n"
            "class Outer(aerogrid.Record):\n    inner: Inner\n"
            "t = app.topic('t', value_type=Outer)\ng = app.Grid('g', columns=['n'])\n"
            "@app.stream(t)\nasync def f(s):\n    async for o in s:\n        g['x'] = {'n': o.inner.n}\n"
        )
        connector.process("t", messages([{"inner": {"n": "4"}}]))
        self.assertEqual(connector.take_changes(), {"g": {"x": {"n": 4}}})

    def test_a_stream_must_be_async(self):
        with self.assertRaises(LoadError) as raised:
            Connector("import aerogrid\napp = aerogrid.App('a')\nt = app.topic('t')\n@app.stream(t)\ndef f(s):\n    pass\n")
        self.assertIn("async def", raised.exception.message)


class Serializers(unittest.TestCase):
    def setUp(self):
        # Each test makes an App of its own, outside a connector.
        self.addCleanup(aerogrid._apps.clear)
        aerogrid._apps.clear()

    def test_serializers_are_checked_and_raw_and_str_give_their_types(self):
        app = aerogrid.App("s")
        with self.assertRaisesRegex(ValueError, "value_serializer of topic `t` is one of 'json', 'avro'"):
            app.topic("t", value_serializer="xml")
        with self.assertRaisesRegex(TypeError, "value_serializer='raw' of topic `r` gives bytes"):

            class Order(aerogrid.Record):
                product: str

            app.topic("r", value_type=Order, value_serializer="raw")
        text = app.topic("text", value_serializer="str")
        self.assertIs(text.value_type, str)
        raw = app.topic("raw", key_serializer="raw", value_serializer="raw")
        self.assertEqual((raw.key_type, raw.value_type), (bytes, bytes))
        avro = app.topic("avro", value_serializer="avro")
        self.assertEqual((avro.value_type, avro.value_serializer), (dict, "avro"))
        # Declared again the same: the same topic; with another serializer: refused.
        self.assertIs(app.topic("avro", value_serializer="avro"), avro)
        with self.assertRaisesRegex(ValueError, "declared twice"):
            app.topic("avro", value_serializer="json")

    def test_json_schema_values_are_json_after_the_registry_framing(self):
        from aerogrid import _driver

        app = aerogrid.App("s")
        topic = app.topic("t", value_serializer="json-schema")
        framed = b"\x00\x00\x00\x00\x07" + b'{"a": 1}'
        self.assertEqual(_driver.decode_value(topic, framed), {"a": 1})
        with self.assertRaisesRegex(aerogrid.RecordError, "not in the schema registry's wire format"):
            _driver.decode_value(topic, b'{"a": 1}')


class LogicalTypes(unittest.TestCase):
    def test_dates_times_and_decimals_read_from_text(self):
        import datetime
        import decimal

        class Trade(aerogrid.Record):
            at: datetime.datetime
            day: datetime.date
            price: decimal.Decimal

        trade = Trade.from_json({"at": "2026-12-08T01:02:03.5+01:00", "day": "2026-12-08", "price": "12.30"})
        self.assertEqual(trade.at, datetime.datetime(2026, 12, 8, 0, 2, 3, 500000, tzinfo=datetime.timezone.utc))
        self.assertEqual(trade.day, datetime.date(2026, 12, 8))
        self.assertEqual(trade.price, decimal.Decimal("12.30"))
        naive = Trade.from_json({"at": "2026-12-08T01:02:03", "day": "2026-12-08", "price": 1.5})
        self.assertEqual(naive.at.tzinfo, datetime.timezone.utc)
        self.assertEqual(naive.price, decimal.Decimal("1.5"))
        for bad, says in [
            ({"at": "yesterday"}, "field `at` should be a date and time (ISO 8601), got a string 'yesterday'"),
            ({"at": "2026-12-08"}, "field `at` should be a date and time (ISO 8601)"),
            ({"day": "2026-12-08T00:00"}, "field `day` should be a date (YYYY-MM-DD)"),
            ({"price": "NaN"}, "field `price` should be a decimal number"),
        ]:
            message = {"at": "2026-12-08T01:02:03Z", "day": "2026-12-08", "price": "1", **bad}
            with self.assertRaisesRegex(aerogrid.RecordError, re.escape(says)):
                Trade.from_json(message)


class Records(unittest.TestCase):
    def test_fields_optional_lists_nested_and_defaults(self):
        class Line(aerogrid.Record):
            sku: str
            price: float

        class Basket(aerogrid.Record):
            customer: str
            lines: list[Line]
            note: "str | None"
            tags: list[str] = []
            express: bool = False
            extra: dict = {}

        basket = Basket.from_json({"customer": 7, "lines": [{"sku": "a", "price": 2}], "express": "true"})
        self.assertEqual(basket.customer, "7")
        self.assertEqual(basket.lines, [Line(sku="a", price=2.0)])
        self.assertIsNone(basket.note)
        self.assertEqual((basket.tags, basket.express, basket.extra), ([], True, {}))
        with self.assertRaises(aerogrid.RecordError) as raised:
            Basket.from_json({"customer": "c", "lines": [{"sku": "a", "price": "x"}]})
        self.assertEqual(str(raised.exception), "field `lines[0].price` should be a number, got a string 'x'")

    def test_integers_are_not_silently_truncated(self):
        class Reading(aerogrid.Record):
            value: int

        self.assertEqual(Reading.from_json({"value": 3.0}).value, 3)
        with self.assertRaises(aerogrid.RecordError):
            Reading.from_json({"value": 3.5})
        with self.assertRaises(aerogrid.RecordError):
            Reading.from_json({"value": True})


class Grids(unittest.TestCase):
    def test_rows_cells_delete_and_clear_are_reported_as_changes(self):
        grid = aerogrid.Grid("prices", columns=["bid", "ask"])
        grid["x"] = {"bid": 1.0}
        grid["y"]["ask"] = 2
        self.assertEqual(len(grid), 2)
        self.assertIn("x", grid)
        self.assertEqual(grid._take_changes(), {"x": {"bid": 1.0, "ask": None}, "y": {"bid": None, "ask": 2}})
        del grid["x"]
        self.assertEqual(grid._take_changes(), {"x": None})
        grid.clear()
        self.assertEqual(grid._take_changes(), {"y": None})
        self.assertEqual(len(grid), 0)

    def test_only_json_scalars(self):
        grid = aerogrid.Grid("g", columns=["v"])
        with self.assertRaises(TypeError):
            grid["a"] = {"v": [1]}
        with self.assertRaises(ValueError):
            grid["a"] = {"v": float("nan")}
        with self.assertRaises(TypeError):
            grid[1.5] = {"v": 1}
        with self.assertRaises(ValueError):
            grid["a"] = {"v": 2**64}


class StreamsAndTimers(ConnectorTest):
    def test_values_events_several_topics_timers_and_logs(self):
        source = """\
import logging
import aerogrid
app = aerogrid.App('joins')
prices = app.topic('prices', key_type=str, value_type=float)
trades = app.topic('trades', key_type=None, value_type=dict)
board = app.Grid('board', columns=['price', 'last_offset', 'ticks'], default=lambda: {'ticks': 0})

@app.stream(prices, trades)
async def join(stream):
    async for key, value, topic, partition, offset, timestamp in stream.events():
        if topic == 'prices':
            board[key] = {'price': value, 'last_offset': offset, 'ticks': board[key]['ticks']}
        else:
            print('trade', value['id'])

@app.timer(0.5)
async def tick():
    for key in board:
        board[key]['ticks'] = board[key]['ticks'] + 1
    logging.warning('ticked')
"""
        connector = self.load(source)
        connector.process("prices", messages([1.5, 2], start=10))
        connector.process("trades", messages([{"id": 9}]))
        self.assertEqual(
            connector.take_changes()["board"],
            {"k10": {"price": 1.5, "last_offset": 10, "ticks": 0}, "k11": {"price": 2.0, "last_offset": 11, "ticks": 0}},
        )
        connector.run_due_timers(now=connector.next_timer_due())
        self.assertEqual(connector.take_changes()["board"]["k10"]["ticks"], 1)
        self.assertEqual([(log.level, log.message) for log in connector.take_logs()], [("info", "trade 9"), ("warning", "ticked")])


if __name__ == "__main__":
    unittest.main()


class RecordCases(unittest.TestCase):
    """The reference decoding against `record_cases.json`, which the Rust fast path
    (connector/src/decode.rs) is checked against too."""

    def test_the_shared_cases_decode_as_they_say(self):
        from typing import Optional
        from types import SimpleNamespace

        from aerogrid._driver import decode_value

        class Line(aerogrid.Record):
            sku: str
            price: float

        class Order(aerogrid.Record):
            product: str
            quantity: int
            price: float
            express: bool = False
            note: Optional[str]
            tags: list[str] = []
            lines: list[Line] = []

        cases = json.loads((Path(__file__).parent / "record_cases.json").read_text())["cases"]
        topic = SimpleNamespace(value_type=Order, value_serializer="json")
        for case in cases:
            with self.subTest(message=case["message"]):
                try:
                    record = decode_value(topic, case["message"].encode())
                except aerogrid.RecordError as error:
                    reason = str(error)
                    if "error_starts_with" in case:
                        self.assertTrue(reason.startswith(case["error_starts_with"]), reason)
                    else:
                        self.assertEqual(reason, case.get("error"))
                    continue
                self.assertIn("record", case, f"decoded as {record!r}")
                # As JSON text: 2 and 2.0, or 1 and True, are equal in Python but not alike.
                self.assertEqual(json.dumps(record.to_dict(), sort_keys=True), json.dumps(case["record"], sort_keys=True))
