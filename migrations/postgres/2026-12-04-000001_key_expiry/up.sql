-- API keys may expire (`ferry admin key create --expires-in 90d`); NULL: never.
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
