-- Two-phase dead-letter relay (services/responder/relay.py): a row is marked as being relayed, in a
-- committed statement, before it is published. A row whose mark ran out was being relayed by a
-- process that died: it is "in doubt" (the broker may hold its letter already) and is only published
-- again if the DLQ does not hold a letter with its message id.
ALTER TABLE dead_letter_outbox ADD COLUMN IF NOT EXISTS relaying_until timestamptz;
