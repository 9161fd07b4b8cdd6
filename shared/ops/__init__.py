"""Operator tooling: setup (database, migrations, broker, topology), the management API client, CLI errors."""
