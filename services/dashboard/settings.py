"""The dashboard's settings: the common ``SWITCHBOARD_*`` ones, the management API, where it serves."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.runtime.settings import ManagementAccess


class DashboardSettings(ManagementAccess):
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(8090, ge=0, le=65535)
    # Required whenever the dashboard listens beyond loopback: sent as "Authorization: Bearer <token>",
    # or as the password of HTTP Basic auth (any user name; browsers ask for it).
    dashboard_token: SecretStr = SecretStr("")
    # How often the page asks for a new snapshot; snapshots are cached for as long, so that any
    # number of open pages costs the database one set of queries per interval.
    dashboard_refresh_s: float = Field(2.0, gt=0, le=300)
    dashboard_failures_shown: int = Field(15, ge=1, le=200)
    # Where to read circuit breaker states when no ``provider_circuits`` table exists: the /metrics of
    # any one sender (replicas share breaker state, so one replica's gauges speak for all). Empty: none.
    dashboard_circuits_url: str = ""
    # Dead letters by reason: read at most this many messages from the head of the DLQ every 30 s
    # (the page says when the DLQ holds more); 0 turns the look off. It needs SWITCHBOARD_RABBITMQ_URL
    # with read access to the dlq (the `switchboard-dlq` user in compose and k8s).
    dashboard_dlq_scan_limit: int = Field(1000, ge=0, le=65_535)
