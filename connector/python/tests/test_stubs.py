"""The type stubs (`aerogrid/__init__.pyi`: what the editor completes and the validator knows)
and the package itself agree: the same public names, the same public members of each class."""

import ast
import inspect
import sys
import textwrap
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aerogrid  # noqa: E402

STUBS = Path(aerogrid.__file__).with_suffix(".pyi")


def public(name):
    return not name.startswith("_")


def stub_names():
    """Top-level public names of the stubs, and each stub class's public members."""
    tree = ast.parse(STUBS.read_text())
    names, classes = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            classes[node.name] = {name for name in members if public(name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
    return {name for name in names if public(name)}, classes


def instance_attributes(cls):
    """Attributes `__init__` sets on `self` (the class itself does not have them)."""
    init = cls.__dict__.get("__init__")
    if init is None:
        return set()
    tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
        and isinstance(node.ctx, ast.Store)
    }


def runtime_members(cls):
    """Public members a class defines itself (not those every object or tuple has)."""
    inherited = set().union(*(dir(base) for base in cls.__mro__[1:]))
    own = {name for name in dir(cls) if public(name) and name not in inherited}
    # NamedTuple fields are attributes of the instances.
    own.update(getattr(cls, "_fields", ()))
    return own


class StubsTest(unittest.TestCase):
    def test_the_stubs_name_what_the_package_has_and_nothing_else(self):
        names, _ = stub_names()
        # Type aliases of the stubs only (for annotations), not runtime names.
        names -= {"Scalar", "Serializer"}
        for name in sorted(names):
            self.assertTrue(hasattr(aerogrid, name), f"the stubs name `{name}`, the package has none")
        for name in aerogrid.__all__:
            self.assertIn(name, names, f"`aerogrid.{name}` is exported but not in the stubs")

    def test_each_class_has_the_members_its_stub_says(self):
        _, classes = stub_names()
        for name, members in sorted(classes.items()):
            cls = getattr(aerogrid, name)
            self.assertTrue(inspect.isclass(cls), name)
            have = runtime_members(cls)
            # Methods and properties both ways; attributes the stubs name must be set.
            self.assertEqual(members - have - instance_attributes(cls), set(), f"{name}: in the stubs, not the package")
            self.assertEqual(have - members, set(), f"{name}: in the package, not the stubs")


if __name__ == "__main__":
    unittest.main()
