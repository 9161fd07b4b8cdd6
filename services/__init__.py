"""Switchboard's processes, one package each: ``python -m services.<name>``."""
