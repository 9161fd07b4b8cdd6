"""``switchboard admin``'s settings: the backends as their owner and the RabbitMQ management API.

The database roles' passwords it sets are read apart (``SWITCHBOARD_POSTGRES_<ROLE>_PASSWORD``,
:class:`shared.db.roles.RolePasswords`)."""

from __future__ import annotations

from shared.runtime.settings import ManagementAccess


class AdminSettings(ManagementAccess):
    pass
