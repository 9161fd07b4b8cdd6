"""The poller: claims due PENDING logs in PostgreSQL and publishes them to the ``dispatch`` shards."""
