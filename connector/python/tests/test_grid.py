"""`aerogrid.Grid`, message for message. Plain CPython runs these against the reference in
`aerogrid/__init__.py`; a Rust test (`connector/src/python.rs`) runs this same file inside the
embedded interpreter, against the native grid (`connector/src/native/grid.rs`)."""

import enum
import json
import sys
import unittest
from pathlib import Path

if "aerogrid" not in sys.modules:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aerogrid  # noqa: E402


class Color(enum.IntEnum):
    RED = 1


class Column(str):
    pass


class Grids(unittest.TestCase):
    def grid(self, columns=("bid", "ask"), default=None):
        return aerogrid.Grid("prices", columns=list(columns), default=default)

    def assert_error(self, kind, message, call):
        with self.assertRaises(kind) as raised:
            call()
        self.assertEqual(raised.exception.args[0], message)

    def test_a_grid_needs_a_name_and_distinct_named_columns(self):
        Grid = aerogrid.Grid
        self.assert_error(TypeError, "a grid name is a non-empty string", lambda: Grid("", ["a"]))
        self.assert_error(TypeError, "a grid name is a non-empty string", lambda: Grid(3, ["a"]))
        needs = "grid `g` needs a list of column names (non-empty strings)"
        self.assert_error(TypeError, needs, lambda: Grid("g", []))
        self.assert_error(TypeError, needs, lambda: Grid("g", ["a", ""]))
        self.assert_error(TypeError, needs, lambda: Grid("g", ["a", 1]))
        self.assert_error(TypeError, "'int' object is not iterable", lambda: Grid("g", 5))
        self.assert_error(ValueError, "grid `g` names a column twice", lambda: Grid("g", ["a", "a"]))
        self.assert_error(
            TypeError,
            "default of grid `g` must be a function returning a row, e.g. lambda: {...}",
            lambda: Grid("g", ["a"], default={"a": 1}),
        )
        grid = Grid("g", ("a", "b"))
        self.assertEqual((grid.name, grid.columns), ("g", ["a", "b"]))
        self.assertEqual(repr(grid), "<aerogrid.Grid 'g' columns=['a', 'b'] rows=0>")

    def test_a_missing_row_reads_as_the_default_without_being_stored(self):
        grid = self.grid()
        self.assertEqual(grid["x"], {"bid": None, "ask": None})
        with_default = self.grid(default=lambda: {"bid": 0})
        self.assertEqual(with_default["x"], {"bid": 0, "ask": None})
        self.assertEqual((len(with_default), with_default._take_changes()), (0, {}))
        self.assertIsNone(grid.get("x"))
        self.assertEqual(grid.get("x", "none"), "none")
        self.assertNotIn("x", grid)

    def test_a_set_row_has_every_column_in_order(self):
        grid = self.grid()
        grid["x"] = {"ask": 2, "bid": 1.5}
        self.assertEqual(list(grid["x"].items()), [("bid", 1.5), ("ask", 2)])
        grid[7] = {Column("bid"): True}
        self.assertEqual(grid["7"], {"bid": True, "ask": None})
        self.assertEqual(list(grid), ["x", "7"])
        self.assertEqual(grid.keys(), ["x", "7"])
        self.assertEqual(len(grid), 2)
        self.assertEqual(repr(grid), "<aerogrid.Grid 'prices' columns=['bid', 'ask'] rows=2>")
        self.assertEqual(
            grid._take_changes(), {"x": {"bid": 1.5, "ask": 2}, "7": {"bid": True, "ask": None}}
        )
        self.assertEqual(grid._take_changes(), {})

    def test_keys_are_strings_or_ints(self):
        grid = self.grid()
        for key, name in [(1.5, "float"), (True, "bool"), (None, "NoneType"), (b"x", "bytes")]:
            message = f"grid `prices` rows are keyed by strings, not {name}"
            self.assert_error(TypeError, message, lambda: grid[key])
            self.assert_error(TypeError, message, lambda: grid.__setitem__(key, {}))
            self.assert_error(TypeError, message, lambda: grid.__delitem__(key))
            self.assertNotIn(key, grid)
        self.assertNotIn([1], grid)

    def test_cells_are_json_scalars_within_64_bits(self):
        grid = self.grid()
        self.assert_error(
            TypeError,
            "a row of grid `prices` is a dict of column values, not list",
            lambda: grid.__setitem__("x", [1]),
        )
        self.assert_error(
            KeyError,
            "grid `prices` has no column 'size' (its columns: bid, ask)",
            lambda: grid.__setitem__("x", {"size": 1}),
        )
        self.assert_error(
            KeyError,
            "grid `prices` has no column 1 (its columns: bid, ask)",
            lambda: grid.__setitem__("x", {1: 1}),
        )
        self.assert_error(
            TypeError,
            "grid cells hold str, int, float, bool or None; column `bid` of grid `prices` got list",
            lambda: grid.__setitem__("x", {"bid": [1]}),
        )
        for value in [float("nan"), float("inf"), float("-inf")]:
            self.assert_error(
                ValueError,
                f"column `ask` of grid `prices` got {value}, which JSON cannot carry",
                lambda: grid.__setitem__("x", {"ask": value}),
            )
        for value in [2**63, -(2**63) - 1]:
            self.assert_error(
                ValueError,
                f"column `bid` of grid `prices` got {value}, beyond 64-bit integers",
                lambda: grid.__setitem__("x", {"bid": value}),
            )
        self.assertEqual(len(grid), 0)
        grid["x"] = {"bid": 2**63 - 1, "ask": -(2**63)}
        grid["y"] = {"bid": Color.RED, "ask": "text"}
        self.assertIs(grid["y"]["bid"], Color.RED)

    def test_a_row_writes_its_cells_through(self):
        grid = self.grid(default=lambda: {"bid": 0})
        row = grid["x"]
        self.assertIsInstance(row, dict)
        row["ask"] = 3
        self.assertEqual(grid["x"], {"bid": 0, "ask": 3})
        row.update(bid=1)
        self.assertEqual(grid._take_changes(), {"x": {"bid": 1, "ask": 3}})
        grid["x"]["bid"] = 2
        self.assertEqual(grid["x"]["bid"], 2)
        self.assert_error(
            KeyError,
            "grid `prices` has no column 'size' (its columns: bid, ask)",
            lambda: row["size"],
        )
        self.assert_error(
            KeyError,
            "grid `prices` has no column 'size' (its columns: bid, ask)",
            lambda: row.__setitem__("size", 1),
        )
        self.assert_error(
            ValueError,
            "column `ask` of grid `prices` got nan, which JSON cannot carry",
            lambda: row.__setitem__("ask", float("nan")),
        )
        self.assertEqual(grid["x"], {"bid": 2, "ask": 3})

    def test_a_row_is_a_dict_of_its_own(self):
        grid = self.grid()
        grid["x"] = {"bid": 1}
        row = grid["x"]
        self.assertIsInstance(row, aerogrid.Row)
        self.assertEqual(json.dumps(row), '{"bid": 1, "ask": null}')
        self.assertEqual(repr(row), "{'bid': 1, 'ask': None}")
        del row["bid"]
        self.assertEqual(row, {"ask": None})
        self.assertEqual(grid["x"], {"bid": 1, "ask": None})
        self.assertEqual(grid._take_changes(), {"x": {"bid": 1, "ask": None}})

    def test_a_copy_of_a_row_is_not_the_row(self):
        grid = self.grid()
        grid["x"] = {"bid": 1}
        taken = grid._take_changes()
        taken["x"]["bid"] = 9
        dict.__setitem__(grid["x"], "bid", 8)
        self.assertEqual(grid["x"]["bid"], 1)
        grid["y"] = grid["x"]
        self.assertEqual(grid._take_changes(), {"y": {"bid": 1, "ask": None}})

    def test_deleting_and_clearing_are_changes(self):
        grid = self.grid()
        grid["x"] = {"bid": 1}
        grid["y"] = {"bid": 2}
        del grid["x"]
        self.assert_error(KeyError, "grid `prices` has no row 'x'", lambda: grid.__delitem__("x"))
        self.assertEqual(grid._take_changes(), {"x": None, "y": {"bid": 2, "ask": None}})
        grid.clear()
        self.assertEqual((len(grid), grid._take_changes()), (0, {"y": None}))

    def test_items_read_each_row_when_reached(self):
        grid = self.grid()
        for key in "abc":
            grid[key] = {"bid": key}
        seen = []
        for key, row in grid.items():
            seen.append((key, row["bid"]))
            if key == "a":
                grid["b"] = {"bid": "B"}
        self.assertEqual(seen, [("a", "a"), ("b", "B"), ("c", "c")])
        items = grid.items()
        next(items)
        del grid["b"]
        with self.assertRaises(KeyError):
            next(items)

    def test_a_default_may_read_its_grid_and_must_be_a_row(self):
        grid = aerogrid.Grid("g", ["n"], default=lambda: {"n": len(grid)})
        grid["a"] = {"n": 1}
        grid["b"]["n"] = grid["c"]["n"] + 10
        self.assertEqual(grid._take_changes(), {"a": {"n": 1}, "b": {"n": 11}})
        bad = aerogrid.Grid("bad", ["n"], default=lambda: {"m": 1})
        self.assert_error(KeyError, "grid `bad` has no column 'm' (its columns: n)", lambda: bad["x"])

    def test_restored_rows_are_not_changes(self):
        grid = self.grid()
        grid["old"] = {"bid": 1}
        grid._restore({"x": {"bid": 1, "extra": 2}, "y": {}})
        self.assertEqual(grid._take_changes(), {})
        self.assertEqual(grid.keys(), ["x", "y"])
        self.assertEqual(grid["x"], {"bid": 1, "ask": None})
        self.assertEqual(grid["y"], {"bid": None, "ask": None})


if __name__ == "__main__":
    unittest.main()
