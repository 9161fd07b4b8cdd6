import socket

from tools import ports
from tools.ports import free_port
from tools.stack import ManagedProcess


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


def test_a_start_lost_its_port_only_when_the_bind_error_names_that_port(tmp_path) -> None:
    log = tmp_path / "api.log"
    process = ManagedProcess("api", "api", {}, log, port=19108)
    # what a service logs when its bind fails (one JSON line, as in a real log)
    lost = '{"error": "OSError(98, \'error while attempting to bind on address'
    lost += " ('127.0.0.1', %d): address already in use')\"}\n"
    log.write_text('{"metrics_port":19108,"event":"service_starting"}\n' + lost % 8090)
    assert not process.lost_its_port()  # another port of its own settings (a fixed dashboard port, say)
    log.write_text(lost % 19108)
    assert process.lost_its_port()
    process.log_offset = log.stat().st_size  # a later start's output begins after it
    assert not process.lost_its_port()
