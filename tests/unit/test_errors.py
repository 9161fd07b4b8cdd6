"""shared/core/errors.py: one tree, drawn at the top of the module, every class of it raised somewhere."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from shared.core import errors
from shared.core.errors import SwitchboardError

ROOT = Path(__file__).resolve().parents[2]
# Classes of the tree that live beside the module that raises them (drawn in the tree with it).
LOCAL = {
    "TopologyConflict": "shared.ops.setup",
    "InsecureConfiguration": "shared.runtime.hardening",
    "ReceiptError": "services.receipts.parse",
    "TransportError": "services.sender.adapters.transport",
}


def tree() -> dict[str, type[SwitchboardError]]:
    classes = {
        name: value
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, SwitchboardError)
    }
    for name, module in LOCAL.items():
        classes[name] = getattr(importlib.import_module(module), name)
    return classes


SOURCE = "\n".join(
    path.read_text()
    for package in ("shared", "services", "tools")
    for path in (ROOT / package).rglob("*.py")
    if path != ROOT / "shared" / "core" / "errors.py"
)


@pytest.mark.parametrize("name", sorted(tree()))
def test_every_class_is_drawn_in_the_tree(name: str) -> None:
    assert re.search(rf"(^|[├└]── ){name}\b", errors.__doc__ or "", re.MULTILINE), f"draw {name}"


@pytest.mark.parametrize("name", sorted(tree()))
def test_every_class_is_raised_or_is_the_base_of_one_that_is(name: str) -> None:
    cls = tree()[name]
    if cls.__subclasses__():
        return  # a base: callers catch it, its subclasses are raised
    assert re.search(rf"(?<!class )\b{name}\(", SOURCE), f"{name} is never raised: remove it or raise it"


def test_every_class_of_the_tree_derives_from_switchboard_error() -> None:
    assert all(issubclass(cls, SwitchboardError) for cls in tree().values())
