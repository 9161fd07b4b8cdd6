-- The operator dashboard (services/dashboard): finding one recipient's messages whatever their
-- status (the claim indexes cover open logs only), and the last minutes' attempts per provider.
CREATE INDEX logs_recipient_key_idx ON communication_logs (recipient_key, id DESC);
CREATE INDEX attempts_recorded_idx ON delivery_attempts (recorded_at);
