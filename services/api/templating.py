"""Message templates: ``{{ name }}`` placeholders in named text fields (pure parsing and rendering).

A placeholder is ``{{`` + optional spaces + a variable name + optional spaces + ``}}``; names are
letters, digits and underscores, not starting with a digit. Any other ``{{`` or ``}}`` is an error,
reported when the template is created, so rendering per contact cannot fail on syntax.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")


# A rendered payload is held to the same limit as a message sent through the API (64 KiB of JSON):
# a small template with many placeholders must not turn small variables into megabytes.
MAX_RENDERED_BYTES = 64 * 1024


class TemplateError(ValueError):
    """A template that cannot be parsed, or a render that lacks a variable."""


class RenderTooLarge(TemplateError):
    """A rendering that would exceed the payload limit (refused before it is built)."""


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


def _utf8_size(text: str, what: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError as exc:  # a lone surrogate (JSON allows "\ud800"): no UTF-8 for it
        raise TemplateError(f"{what} is not valid Unicode text (a lone surrogate at {exc.start})") from exc


def parse(fields: Mapping[str, str]) -> Template:
    if not fields:
        raise TemplateError("a template needs at least one field")
    variables: list[str] = []
    for name, text in fields.items():
        if not VARIABLE_NAME.fullmatch(name):
            raise TemplateError(f"field name {name!r} must be letters, digits and underscores")
        _utf8_size(text, f"field {name!r}")
        variables.extend(field_variables(text, name))
    return Template(fields=dict(fields), variables=tuple(dict.fromkeys(variables)))


def rendered_size(template: Template, values: Mapping[str, str]) -> int:
    """The UTF-8 size of the rendered fields' text, computed without rendering (every value present)."""
    sizes = {name: _utf8_size(str(value), f"variable {name!r}") for name, value in values.items()}
    total = 0
    for field, text in template.fields.items():
        total += _utf8_size(text, f"field {field!r}")
        for match in _PLACEHOLDER.finditer(text):
            total += sizes[match.group(1)] - len(match.group(0).encode())
    return total


def render(
    template: Template, values: Mapping[str, str], max_bytes: int = MAX_RENDERED_BYTES
) -> dict[str, str]:
    """Every field with its placeholders replaced; raises :class:`TemplateError` if a value is missing,
    :class:`RenderTooLarge` if the payload would exceed ``max_bytes`` (checked before rendering)."""
    missing = [name for name in template.variables if name not in values]
    if missing:
        raise TemplateError(f"missing variables: {', '.join(missing)}")
    size = rendered_size(template, values)
    if size > max_bytes:
        raise RenderTooLarge(f"the rendered payload would be {size} bytes, more than {max_bytes}")
    rendered = {
        name: _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)
        for name, text in template.fields.items()
    }
    encoded = len(orjson.dumps(rendered))
    if encoded > max_bytes:  # JSON escaping of control characters and quotes
        raise RenderTooLarge(f"the rendered payload is {encoded} bytes of JSON, more than {max_bytes}")
    return rendered
