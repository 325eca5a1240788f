"""One concept per module (issue #18): every dotted name the bundle configs use resolves, every module a config's
expressions use is imported by it, handlers live in ``attok_monai.handlers``, and no module hides its content behind
a name like ``factory``, ``utils`` or ``misc``."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "attok_monai"
CONFIGS = sorted((REPO / "bundles").glob("*/configs/*.json"))
# shared config files shipped as package data (augmentation fragments, shared bundle bases): their names must resolve
PACKAGED = sorted((PACKAGE / "configs").rglob("*.json"))
DOTTED = re.compile(r"\battok_monai(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _resolve(dotted: str) -> str:
    """The longest importable module prefix of ``dotted``; the rest must be attributes. Returns the module name."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            assert hasattr(obj, attr), f"{dotted}: {name} has no {attr}"
            obj = getattr(obj, attr)
        return name
    raise AssertionError(f"{dotted} does not resolve")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_config_names_resolve_and_are_imported(path):
    cfg = json.loads(path.read_text())
    own = list(_strings(cfg.get("imports", []))) + list(_strings(cfg.get("+imports", [])))
    imports = {s[len("$import "):].strip() for s in own if s.startswith("$import ")}
    train = path.parent / "train.json"  # evaluate/extra configs run merged over train.json or on their own
    base = json.loads(train.read_text()).get("imports", []) if train.exists() else []
    imports |= {s[len("$import "):].strip() for s in base if s.startswith("$import ")}
    for text in _strings(cfg):
        for dotted in DOTTED.findall(text):
            if dotted.startswith("attok_monai.") and not text.startswith("$import"):
                module = _resolve(dotted)
                if text.startswith("$") and module != "attok_monai":
                    assert module in imports or any(i.startswith(module + ".") for i in imports), (
                        f"{path.name}: {dotted} used in an expression but {module} is not imported"
                    )
            elif text.startswith("$import"):
                _resolve(dotted)


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_packaged_config_names_resolve(path):
    for text in _strings(json.loads(path.read_text())):
        for dotted in DOTTED.findall(text):
            _resolve(dotted)


def test_no_grab_bag_module_names():
    bad = [p for p in PACKAGE.rglob("*.py") if p.stem in ("factory", "utils", "misc", "helpers", "common")]
    assert not bad, bad


def test_handlers_live_in_handlers():
    outside = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "handlers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if "attach" in methods or node.name.endswith("Handler"):
                    outside.append(f"{path.relative_to(REPO)}:{node.name}")
    assert not outside, outside
