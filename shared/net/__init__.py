"""Outbound network policy: which addresses a tenant-given URL may reach (asked by the API and the sender)."""
