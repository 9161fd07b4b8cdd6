"""What each service's SQL needs from PostgreSQL, read from the source (test_database_grants.py).

A service is everything under ``services/<name>/`` plus the definitions it reaches in other modules:
following names from module to module (``from shared.db.routing_store import RoutingCache`` brings
``RoutingCache`` and what it refers to, never the rest of that module, e.g. the API's ``write_config``).
Every string literal of those definitions that reads like SQL (f-strings with their holes blanked) is
scanned for the privileges it needs, table by table: INSERT (and SELECT for RETURNING / ON CONFLICT,
UPDATE for DO UPDATE), UPDATE and DELETE (and SELECT, for their WHERE), SELECT for every table read,
UPDATE for the tables a FOR UPDATE/SHARE locks, TRUNCATE. Triggers run with the privileges of whoever
fires them, so a statement on a table with a trigger needs what the trigger's function does too.
Foreign-key checks and cascades run as the table owner and need nothing.

It is a reader of our own SQL style, not a SQL parser: a statement assembled from pieces defined far
apart could escape it, which is why the roles of the pipeline also run for real in
tests/security/test_broker_permissions.py.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "shared" / "db" / "migrations"
PACKAGES = ("shared", "services")
Need = tuple[str, str]  # (privilege, table)

_SQL = re.compile(r"(?is)\b(select\b.*\bfrom|insert\s+into|update\s+\w+.*\bset\b|delete\s+from|truncate)\b")


@cache
def tables() -> frozenset[str]:
    found: set[str] = set()
    for path in MIGRATIONS.glob("*.sql"):
        found |= set(re.findall(r"(?i)create\s+table\s+(?:if\s+not\s+exists\s+)?(\w+)", path.read_text()))
    return frozenset(found)


def needs(sql: str) -> set[Need]:
    """The (privilege, table) pairs one SQL text needs (pure)."""
    s = " ".join(re.sub(r"--[^\n]*", " ", sql).lower().split())
    out: set[Need] = set()
    for table in re.findall(r"\binsert into (\w+)", s):
        out.add(("INSERT", table))
        if "returning" in s or "on conflict" in s:
            out.add(("SELECT", table))
        if re.search(r"\bon conflict\b.*\bdo update\b", s):
            out.add(("UPDATE", table))
    for table in re.findall(r"\bupdate (\w+)(?: (?:as )?\w+)? set\b", s):
        out |= {("UPDATE", table), ("SELECT", table)}
    for table in re.findall(r"\bdelete from (\w+)", s):
        out |= {("DELETE", table), ("SELECT", table)}
    for table in re.findall(r"\btruncate (?:table )?((?:\w+)(?:, ?\w+)*)", s):
        out |= {("TRUNCATE", t.strip()) for t in table.split(",")}
    aliases: dict[str, str] = {}
    for table, alias in re.findall(r"(?<!for )(?<!key )\b(?:from|join|update) (\w+)(?: (?:as )?(\w+))?", s):
        out.add(("SELECT", table))
        aliases[table] = table
        if alias:
            aliases[alias] = table
    for lock in re.finditer(
        r"\bfor (?:no key )?(?:update|share)\b(?: of ([\w, ]+?)(?= skip| nowait|\)|$))?", s
    ):
        locked = [a.strip() for a in lock.group(1).split(",")] if lock.group(1) else list(aliases)
        out |= {("UPDATE", aliases.get(a, a)) for a in locked}
    return {(privilege, table) for privilege, table in out if table in tables()}


@cache
def trigger_needs() -> dict[Need, frozenset[Need]]:
    """(event, table) -> what the trigger functions fired by it need, from the migrations."""
    text = "\n".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql")))
    bodies = {
        name: needs(body)
        for name, body in re.findall(
            r"(?is)create\s+(?:or\s+replace\s+)?function\s+(\w+)\s*\(\).*?as\s+\$\$(.*?)\$\$", text
        )
    }
    found: dict[Need, set[Need]] = {}
    for events, table, function in re.findall(
        r"(?is)create\s+trigger\s+\w+\s+(?:before|after)\s+(.+?)\s+on\s+(\w+)\b.*?execute\s+function\s+(\w+)",
        text,
    ):
        for event in re.split(r"(?i)\s+or\s+", events.strip()):
            found.setdefault((event.upper(), table), set()).update(bodies.get(function, set()))
    return {key: frozenset(value) for key, value in found.items()}


# ---- which code a service runs ---------------------------------------------------------------------


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    definitions: dict[str, ast.stmt] = field(default_factory=dict)
    imported: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # local -> (module, name)


@cache
def module(name: str) -> Module | None:
    base = ROOT.joinpath(*name.split("."))
    path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
    if not path.exists():
        return None
    tree = ast.parse(path.read_text())
    found = Module(name, path, tree)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.definitions[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found.definitions[target.id] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                target = (submodule, None) if module_exists(submodule) else (node.module, alias.name)
                found.imported[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    found.imported[alias.asname or alias.name] = (alias.name, None)
    return found


def module_exists(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def reached(service: str) -> list[ast.AST]:
    """Every definition (and module body) the service's own modules reach, across modules."""
    seen: set[tuple[str, str | None]] = set()
    todo: list[tuple[str, str | None]] = []
    for path in sorted((ROOT / "services" / service).rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        name = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        todo.append((name, None))
    nodes: list[ast.AST] = []
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        found = module(key[0])
        if found is None:
            continue
        own = found.name.startswith(f"services.{service}")
        if key[1] is None and own:
            node: ast.AST | None = found.tree  # the service's own module: all of it
        elif key[1] is None:
            # a module used as a namespace (``from shared import x``): only the attributes taken from it
            node = None
        else:
            node = found.definitions.get(key[1])
            if node is None and key[1] in found.imported:
                todo.append(found.imported[key[1]])
        if node is None:
            continue
        nodes.append(node)
        for name in _names(node):
            if name in found.definitions and (found.name, name) not in seen:
                todo.append((found.name, name))
            if name in found.imported:
                todo.append(found.imported[name])
    return nodes


def sql_texts(node: ast.AST) -> Iterator[str]:
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(node)
        if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
    }
    for n in ast.walk(node):
        if isinstance(n, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else " _ " for v in n.values)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            text = n.value
        else:
            continue
        if _SQL.search(text):
            yield text


def service_needs(service: str) -> set[Need]:
    """Every (privilege, table) the service's SQL needs, triggers included."""
    found: set[Need] = set()
    for node in reached(service):
        for text in sql_texts(node):
            found |= needs(text)
    for need in list(found):
        found |= trigger_needs().get(need, frozenset())
    return found
