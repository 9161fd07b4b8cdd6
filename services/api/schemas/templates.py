"""Requests and responses of /v1/templates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from services.api.schemas.common import Name, Text
from shared.core.models import Channel

FieldText = Annotated[Text, Field(max_length=10_000)]
FieldName = Annotated[Text, Field(min_length=1, max_length=64)]


class TemplateCreate(BaseModel):
    """Named text fields (e.g. ``subject``, ``body``) with ``{{ variable }}`` placeholders."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "welcome", "channel": "sms", "content": {"body": "Hi {{ name }}, welcome!"}},
                {
                    "name": "receipt",
                    "channel": "email",
                    "content": {"subject": "Order {{ order }}", "body": "Thanks {{ name }}."},
                },
            ]
        },
    )

    name: Name
    channel: Channel
    content: dict[FieldName, FieldText] = Field(min_length=1, max_length=20)


class TemplateOut(BaseModel):
    id: int
    name: str
    channel: Channel
    content: dict[str, str]
    variables: list[str]
    created_at: datetime


class TemplateList(BaseModel):
    items: list[TemplateOut]


class PreviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"variables": {"name": "Ada", "order": "A-42"}}]}
    )

    variables: dict[FieldName, FieldText] = Field(default_factory=dict, max_length=100)


class PreviewOut(BaseModel):
    payload: dict[str, str]
