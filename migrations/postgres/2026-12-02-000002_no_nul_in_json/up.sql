-- PostgreSQL's jsonb cannot hold U+0000, so one stored `\u0000` escape made every
-- attribute filter over its organization fail (the `::jsonb` cast). Imports now
-- refuse NUL characters; this replaces those already stored with U+FFFD. The
-- pattern matches `\u0000` only where its backslash is not itself escaped (an odd
-- run of backslashes), so a literal `\\u0000` in a value is left alone.
UPDATE entities
SET attributes = regexp_replace(attributes, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g')
WHERE attributes LIKE '%\\u0000%';

UPDATE entities
SET entity_data = regexp_replace(entity_data, '(?<!\\)((?:\\\\)*)\\u0000', '\1\\ufffd', 'g')
WHERE entity_data LIKE '%\\u0000%';
