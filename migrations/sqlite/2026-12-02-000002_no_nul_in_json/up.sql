-- The PostgreSQL migration of the same name replaces stored `\u0000` escapes, which
-- its jsonb cannot hold; SQLite's JSON functions read them, so nothing changes here.
SELECT 1;
