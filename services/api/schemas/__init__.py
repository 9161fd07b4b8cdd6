"""Pydantic models of every request and response of the API."""
