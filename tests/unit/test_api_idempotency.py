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


def test_a_request_stored_before_ordering_keys_existed_still_replays() -> None:
    # Given the digest a single and a batch send got before the models had ordering_key
    before = {"channel": "sms", "recipient": "+14155550100", "payload": {"body": "hi"}, "priority": 0}
    single = fingerprint("POST", "/v1/messages", before)
    batch = fingerprint("POST", "/v1/messages/batch", {"messages": [before, before]})
    # When the same requests come again, now dumped with the new field unset
    now = {**before, "ordering_key": None}
    assert fingerprint("POST", "/v1/messages", now) == single
    assert fingerprint("POST", "/v1/messages/batch", {"messages": [now, now]}) == batch
    # ... while a request that sets it is another request
    assert fingerprint("POST", "/v1/messages", {**before, "ordering_key": "order-7"}) != single
