DROP INDEX IF EXISTS entities_org_external_id;
DROP INDEX IF EXISTS entities_org_tax_id;
DROP INDEX IF EXISTS entities_attributes;
DROP INDEX IF EXISTS entities_search;
