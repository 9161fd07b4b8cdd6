"""services/api/templating.py: placeholders parsed at creation, rendered per contact."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.templating import TemplateError, parse, render


def test_variables_are_found_in_every_field_in_order_of_first_use() -> None:
    template = parse({"subject": "Hi {{ first }}", "body": "{{first}} {{ last }}, your code is {{code}}."})
    assert template.variables == ("first", "last", "code")


def test_rendering_fills_every_field() -> None:
    template = parse({"subject": "Hi {{ first }}", "body": "Code {{code}} for {{first}}"})
    assert render(template, {"first": "Ada", "code": "42", "unused": "x"}) == {
        "subject": "Hi Ada",
        "body": "Code 42 for Ada",
    }


def test_values_are_not_rendered_again() -> None:
    template = parse({"body": "{{a}}"})
    assert render(template, {"a": "{{b}}"}) == {"body": "{{b}}"}


@pytest.mark.parametrize(
    "text", ["Hi {{ name", "Hi name }}", "{{ 1abc }}", "{{ a b }}", "{{}}", "{{ na-me }}", "{ {{x}} }}"]
)
def test_malformed_placeholders_are_refused_at_creation(text: str) -> None:
    with pytest.raises(TemplateError, match="malformed placeholder"):
        parse({"body": text})


def test_field_names_and_emptiness_are_checked() -> None:
    with pytest.raises(TemplateError, match="at least one field"):
        parse({})
    with pytest.raises(TemplateError, match="field name"):
        parse({"bad name": "x"})


def test_a_missing_variable_is_named() -> None:
    template = parse({"body": "{{a}} {{b}} {{c}}"})
    with pytest.raises(TemplateError, match="missing variables: b, c"):
        render(template, {"a": "1"})


@given(st.text(alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=200))
def test_text_without_braces_renders_to_itself(text: str) -> None:
    assert render(parse({"body": text}), {}) == {"body": text}


def test_a_lone_surrogate_in_a_field_or_a_value_is_a_template_error_not_a_crash() -> None:
    # JSON may carry "\ud800", which has no UTF-8 form: it could be neither measured nor stored
    with pytest.raises(TemplateError, match="field 'body' is not valid Unicode"):
        parse({"body": "hi \ud800"})
    with pytest.raises(TemplateError, match="variable 'name' is not valid Unicode"):
        render(parse({"body": "hi {{name}}"}), {"name": "\ud800"})
