"""The responder: applies outcomes to PostgreSQL, decides retries, dead-letters what cannot be delivered."""
