DROP TABLE import_errors;
