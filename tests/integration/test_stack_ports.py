import socket

import httpx
import pytest

from tools.stack import ProcessExited, Stack


@pytest.mark.e2e
async def test_a_process_whose_port_was_taken_starts_again_on_another(stack: Stack) -> None:
    # Given a process whose port another program takes between the choice and the child's bind
    process = stack.add("mock_provider")
    first = process.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first))
        squatter.listen()
        # When the stack starts it
        await stack.start()
    # Then it runs on a new port, after one start that failed on the taken one
    assert process.port != first and process.starts == 2
    assert process.env["SWITCHBOARD_MOCK_PORT"] == str(process.port)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{stack.url('mock_provider')}/readyz")).status_code == 200


@pytest.mark.e2e
async def test_a_pinned_port_that_is_taken_fails_the_start_instead_of_moving(stack: Stack) -> None:
    # Given a process on a port its caller chose (as `make run` pins the README's ports), already taken
    process = stack.add("mock_provider")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        pinned = squatter.getsockname()[1]
        process.pin(pinned)
        # When the stack starts it / Then the start fails, once, on that port
        with pytest.raises(ProcessExited):
            await stack.start()
    assert process.port == pinned and process.starts == 1
