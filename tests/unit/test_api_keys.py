"""services/api/keys.py: key format, hashing with a pepper, constant-time verification."""

from __future__ import annotations

from services.api.keys import generate_key, hash_key, key_id_of, verify_key


def test_a_new_key_carries_its_id_and_verifies_against_its_hash() -> None:
    # Given a new key and its stored hash
    new = generate_key()
    stored = hash_key(new.key, "pepper")
    # Then the id can be read back from the key, and the key verifies
    assert key_id_of(new.key) == new.key_id
    assert verify_key(new.key, stored, "pepper")
    # ... but not with another pepper, nor a key that differs by one character
    assert not verify_key(new.key, stored, "other pepper")
    assert not verify_key(new.key[:-1] + ("A" if new.key[-1] != "A" else "B"), stored, "pepper")


def test_keys_are_unique_and_the_hash_is_not_the_key() -> None:
    keys = {generate_key().key for _ in range(200)}
    assert len(keys) == 200
    key = next(iter(keys))
    assert key not in hash_key(key, "p")


def test_malformed_keys_have_no_id() -> None:
    for bad in [
        "",
        "sbk_",
        "sbk_zzzzzzzzzzzz_" + "a" * 40,
        "xyz_0123456789ab_" + "a" * 40,
        "sbk_0123456789ab_short",
    ]:
        assert key_id_of(bad) is None
