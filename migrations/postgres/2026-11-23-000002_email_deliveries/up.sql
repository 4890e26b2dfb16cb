-- One row per export and recipient: what was sent, once.
CREATE TABLE email_deliveries (
    job_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    state TEXT NOT NULL,
    message_id TEXT,
    error TEXT,
    updated_at BIGINT NOT NULL,
    sent_at BIGINT,
    PRIMARY KEY (job_id, recipient)
);
