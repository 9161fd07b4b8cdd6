"""Switchboard's common package: settings, database, topology, messages and the pure decisions."""
