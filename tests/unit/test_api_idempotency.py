"""services/api/idempotency.py: the request fingerprint and the replay/conflict rule."""

from __future__ import annotations

from services.api.idempotency import StoredResponse, Verdict, fingerprint, judge


def test_the_fingerprint_ignores_key_order_but_not_values_paths_or_methods() -> None:
    a = fingerprint("POST", "/v1/messages", {"channel": "sms", "payload": {"b": 1, "a": 2}})
    b = fingerprint("post", "/v1/messages", {"payload": {"a": 2, "b": 1}, "channel": "sms"})
    assert a == b
    assert a != fingerprint("POST", "/v1/messages", {"channel": "sms", "payload": {"b": 1, "a": 3}})
    assert a != fingerprint("POST", "/v1/messages/batch", {"channel": "sms", "payload": {"b": 1, "a": 2}})
    assert a != fingerprint("PUT", "/v1/messages", {"channel": "sms", "payload": {"b": 1, "a": 2}})


def test_a_new_key_a_replay_and_a_conflict() -> None:
    stored = StoredResponse(request_hash="h1", status_code=202, body={"id": 1})
    assert judge(None, "h1") is Verdict.NEW
    assert judge(stored, "h1") is Verdict.REPLAY
    assert judge(stored, "h2") is Verdict.CONFLICT
