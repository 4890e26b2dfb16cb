-- One row per problem of an import row: failures (the row was not written) and
-- warnings (the row was written without the offending value). Written in the same
-- transaction as the batch and its checkpoint, so a retried job never repeats one.
CREATE TABLE import_errors (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    line BIGINT NOT NULL,
    seq INTEGER NOT NULL,
    severity TEXT NOT NULL,
    column_name TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    raw_value TEXT NOT NULL,
    -- JSON array of the row's original cells, for the error report.
    raw_record TEXT NOT NULL,
    PRIMARY KEY (job_id, line, seq)
);
