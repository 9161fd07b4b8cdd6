"""Message templates: ``{{ name }}`` placeholders in named text fields (pure parsing and rendering).

A placeholder is ``{{`` + optional spaces + a variable name + optional spaces + ``}}``; names are
letters, digits and underscores, not starting with a digit. Any other ``{{`` or ``}}`` is an error,
reported when the template is created, so rendering per contact cannot fail on syntax.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")


class TemplateError(ValueError):
    """A template that cannot be parsed, or a render that lacks a variable."""


@dataclass(frozen=True, slots=True)
class Template:
    fields: dict[str, str]
    variables: tuple[str, ...]


def field_variables(text: str, field: str) -> list[str]:
    """The variables of one field, in order of first use; raises :class:`TemplateError`."""
    names = [m.group(1) for m in _PLACEHOLDER.finditer(text)]
    rest = _PLACEHOLDER.sub("", text)
    for token in ("{{", "}}"):
        if token in rest:
            raise TemplateError(f"field {field!r}: malformed placeholder near {token!r}; use {{{{ name }}}}")
    return list(dict.fromkeys(names))


def parse(fields: Mapping[str, str]) -> Template:
    if not fields:
        raise TemplateError("a template needs at least one field")
    variables: list[str] = []
    for name, text in fields.items():
        if not VARIABLE_NAME.fullmatch(name):
            raise TemplateError(f"field name {name!r} must be letters, digits and underscores")
        variables.extend(field_variables(text, name))
    return Template(fields=dict(fields), variables=tuple(dict.fromkeys(variables)))


def render(template: Template, values: Mapping[str, str]) -> dict[str, str]:
    """Every field with its placeholders replaced; raises :class:`TemplateError` if a value is missing."""
    missing = [name for name in template.variables if name not in values]
    if missing:
        raise TemplateError(f"missing variables: {', '.join(missing)}")
    return {
        name: _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)
        for name, text in template.fields.items()
    }
