-- Files uploaded ahead of their import (the hub uploads a file while the person
-- fills step 2); the import names one by id. Each expires and is removed with its
-- stored object by the staged-upload sweep; no foreign key, so the sweep also
-- removes those of an organization that is gone.
CREATE TABLE staged_uploads (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    object_key TEXT NOT NULL,
    file_name TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX staged_uploads_org ON staged_uploads (organization_id, created_at);
CREATE INDEX staged_uploads_expiry ON staged_uploads (expires_at);
