"""The HTTP API: ingest, status, campaigns, templates, statistics and routing configuration."""
