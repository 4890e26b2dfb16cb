-- Filters that hold at a big organization's size (see "Running on PostgreSQL" in
-- the README). Each index serves a superset condition the listing adds beside the
-- exact one, so results are the same with or without it.

-- Search (a substring of name, tax ID or external ID): trigrams of the three
-- fields joined. pg_trgm ships with PostgreSQL and is a trusted extension (13+),
-- so the database's owner may create it; where it cannot be created, search still
-- works by reading the organization's rows, and a notice says so.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm cannot be created (%): entity search reads the organization''s rows', SQLERRM;
END
$$;

DO $$
DECLARE
    home TEXT;
BEGIN
    SELECT n.nspname INTO home FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF home IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS entities_search ON entities USING gin '
            '((lower(name || '' '' || tax_id || '' '' || coalesce(external_id, ''''))) %s.gin_trgm_ops)',
            quote_ident(home));
    END IF;
END
$$;

-- One tax ID or external ID whatever its country: the unique key has the country
-- between the organization and the tax ID, so without these a tax ID filter read
-- the organization's whole range (632 ms at 2M entities).
CREATE INDEX IF NOT EXISTS entities_org_tax_id ON entities (organization_id, tax_id);
CREATE INDEX IF NOT EXISTS entities_org_external_id ON entities (organization_id, external_id);

-- Attribute equality: the attributes as jsonb, for containment (`@>`).
CREATE INDEX IF NOT EXISTS entities_attributes ON entities USING gin ((attributes::jsonb) jsonb_path_ops);
