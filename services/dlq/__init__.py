"""The dead-letter queue admin: ``python -m services.dlq list | show | requeue | purge | export | stats``."""
