-- Security hardening (issue 15): API keys may expire.
-- A key past expires_at is refused like a revoked one; NULL (every existing key) never expires.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz;
