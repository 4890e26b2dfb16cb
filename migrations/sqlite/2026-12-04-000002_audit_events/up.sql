-- Who did what to which object, and how it ended: every mutating call, every
-- download or error-report link issued (gRPC, REST, e-mail) and every admin change.
-- Successful changes are written in the change's own transaction.
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    organization_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    door TEXT NOT NULL,
    method TEXT NOT NULL,
    target_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    -- A refusal's message, an e-mail's recipient, an admin command's arguments.
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_by_org_time ON audit_events (organization_id, at);
CREATE INDEX audit_events_by_time ON audit_events (at);
