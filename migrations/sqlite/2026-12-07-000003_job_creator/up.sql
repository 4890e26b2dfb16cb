-- Who queued a job (an API key id, jwt:<subject>, cert:<identity>, admin:<user>):
-- the hub's lists and the Export/Import messages' `creator`. NULL for jobs ferry
-- queued itself and for jobs queued before this column.
ALTER TABLE jobs ADD COLUMN created_by TEXT;
