-- Portable schema, the same tables as migrations/postgres (SQLite accepts the
-- same DDL: BOOLEAN and BIGINT take integer affinity). Keep them in step.
CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    features TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    permissions TEXT NOT NULL,
    allowed_organizations TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_org ON api_keys (organization_id);

CREATE TABLE email_domains (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    domain TEXT NOT NULL,
    verified BOOLEAN NOT NULL DEFAULT FALSE,
    verification_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    verified_at BIGINT,
    UNIQUE (organization_id, domain)
);

CREATE TABLE email_senders (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    UNIQUE (organization_id, email)
);

CREATE TABLE enrichments (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    code TEXT NOT NULL,
    entity_type TEXT NOT NULL DEFAULT 'any',
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, code)
);

CREATE TABLE enrichment_groups (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    codes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, slug)
);

CREATE TABLE entities (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    entity_type TEXT NOT NULL,
    tax_id TEXT NOT NULL,
    country TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    gender TEXT,
    external_id TEXT,
    email TEXT,
    phone TEXT,
    registration_date TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    is_client BOOLEAN NOT NULL DEFAULT FALSE,
    nationality TEXT,
    risk_matrix_id TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    entity_data TEXT NOT NULL DEFAULT '{}',
    enrichment_plan TEXT,
    skip_rules_execution BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (organization_id, country, tax_id)
);
CREATE INDEX entities_org_created ON entities (organization_id, created_at, id);
CREATE INDEX entities_org_updated ON entities (organization_id, updated_at, id);

-- The queue shared by every job kind.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    result TEXT,
    error TEXT,
    request_id TEXT,
    dedupe_key TEXT,
    search_text TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_after BIGINT NOT NULL,
    lease_id TEXT,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    rows_done BIGINT NOT NULL DEFAULT 0,
    rows_total BIGINT,
    bytes_done BIGINT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX jobs_runnable ON jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_org_kind_created ON jobs (organization_id, kind, created_at, id);
CREATE UNIQUE INDEX jobs_request_id ON jobs (organization_id, kind, request_id);

CREATE TABLE usage_events (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    job_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (job_id, kind)
);
CREATE INDEX usage_events_org ON usage_events (organization_id, created_at);

CREATE TABLE mappings (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    column_map TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX mappings_org ON mappings (organization_id, created_at, id);
