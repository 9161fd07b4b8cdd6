"""The RabbitMQ management HTTP API: vhosts, permissions, policies, queue depths."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from shared.runtime.settings import Settings


class Management:
    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.client = httpx.AsyncClient(
            base_url=settings.rabbitmq_management_url.rstrip("/") + "/api",
            auth=(
                settings.rabbitmq_management_user,
                settings.rabbitmq_management_password.get_secret_value(),
            ),
            timeout=timeout,
        )

    async def __aenter__(self) -> Management:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()

    @staticmethod
    def _v(vhost: str) -> str:
        return quote(vhost, safe="")

    async def _put(self, path: str, body: dict[str, Any]) -> None:
        response = await self.client.put(path, json=body)
        response.raise_for_status()

    async def create_vhost(self, vhost: str) -> None:
        await self._put(f"/vhosts/{self._v(vhost)}", {})

    async def delete_vhost(self, vhost: str) -> None:
        response = await self.client.delete(f"/vhosts/{self._v(vhost)}")
        if response.status_code != 404:
            response.raise_for_status()

    async def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        await self._put(
            f"/permissions/{self._v(vhost)}/{quote(user, safe='')}",
            {"configure": configure, "write": write, "read": read},
        )

    async def put_user(self, user: str, password: str, tags: str = "") -> None:
        await self._put(f"/users/{quote(user, safe='')}", {"password": password, "tags": tags})

    async def put_policy(self, vhost: str, policy: dict[str, Any]) -> None:
        body = {k: policy[k] for k in ("pattern", "definition", "priority", "apply-to")}
        await self._put(f"/policies/{self._v(vhost)}/{quote(policy['name'], safe='')}", body)

    async def queues(self, vhost: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/queues/{self._v(vhost)}")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    async def queue(self, vhost: str, name: str) -> dict[str, Any]:
        response = await self.client.get(f"/queues/{self._v(vhost)}/{quote(name, safe='')}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def overview(self) -> dict[str, Any]:
        response = await self.client.get("/overview")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    # --- definitions, users and the entities of a vhost (used by ``services.admin`` and its tests) ---

    async def _get_json(self, path: str) -> Any:
        response = await self.client.get(path)
        response.raise_for_status()
        return response.json()

    async def user(self, name: str) -> dict[str, Any] | None:
        """The user's record, or ``None`` when there is no such user."""
        response = await self.client.get(f"/users/{quote(name, safe='')}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def delete_user(self, name: str) -> None:
        response = await self.client.delete(f"/users/{quote(name, safe='')}")
        if response.status_code != 404:
            response.raise_for_status()

    async def policies(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._get_json(f"/policies/{self._v(vhost)}")
        return result

    async def operator_policies(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._get_json(f"/operator-policies/{self._v(vhost)}")
        return result

    async def exchanges(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._get_json(f"/exchanges/{self._v(vhost)}")
        return result

    async def bindings(self, vhost: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._get_json(f"/bindings/{self._v(vhost)}")
        return result

    async def delete_queue(self, vhost: str, name: str) -> None:
        response = await self.client.delete(f"/queues/{self._v(vhost)}/{quote(name, safe='')}")
        if response.status_code != 404:
            response.raise_for_status()

    async def import_definitions(self, document: dict[str, Any]) -> None:
        """``POST /api/definitions``: what ``rabbitmqctl import_definitions`` does, over HTTP."""
        response = await self.client.post("/definitions", json=document)
        response.raise_for_status()
