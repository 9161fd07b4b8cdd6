import socket

from tools import ports
from tools.ports import free_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    handed_out = [free_port() for _ in range(50)]
    assert len(set(handed_out)) == 50
    assert all(port < ports._ephemeral_start() for port in handed_out)
    with socket.socket() as server:
        server.bind(("127.0.0.1", handed_out[-1]))


def test_a_port_in_use_is_not_handed_out(monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, busy, busy + 1 if busy < 65535 else busy - 1])
        monkeypatch.setattr(ports, "_ephemeral_start", lambda: 65_536)
        monkeypatch.setattr(ports.random, "randint", lambda _lo, _hi: next(picks))
        monkeypatch.setattr(ports, "_handed_out", set())
        assert free_port() != busy
