-- PostgreSQL's twin adds indexes for tax and external IDs without their country,
-- trigram search and jsonb attributes. The embedded database keeps scanning the
-- organization's rows for those filters (README: The embedded database), so this
-- migration only keeps the two migration lists in step.
SELECT 1;
