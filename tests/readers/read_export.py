#!/usr/bin/env python3
"""Reads an export file with libraries other than the writer's (csv, openpyxl,
pyarrow, fastavro) and prints {"columns": [...], "rows": [[...], ...]} as JSON, so
the Rust tests can compare it cell by cell.

Values are normalised: timestamps -> "YYYY-MM-DDTHH:MM:SS.mmmZ", dates ->
"YYYY-MM-DD", UUIDs -> text; everything else as the reader returns it.
Usage: read_export.py FORMAT PATH
"""
import csv
import datetime
import gzip
import io
import json
import sys
import uuid


def norm(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        millis = round(value.microsecond / 1000)
        value = value.replace(microsecond=0) + datetime.timedelta(milliseconds=millis)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def open_bytes(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw


def read_csv(path):
    text = open_bytes(path).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], rows[1:]


def read_json(path, lines):
    text = open_bytes(path).decode("utf-8")
    objects = [json.loads(l) for l in text.splitlines() if l.strip()] if lines else json.loads(text)
    columns = list(objects[0].keys()) if objects else []
    return columns, [list(o.values()) for o in objects]


SHEETS = []


def read_xlsx(path):
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True)
    SHEETS.extend(book.sheetnames)
    columns, rows = None, []
    for sheet in book.worksheets:
        sheet_rows = list(sheet.iter_rows())
        if not sheet_rows:
            continue
        columns = [c.value for c in sheet_rows[0]]
        for r in sheet_rows[1:]:
            rows.append([xlsx_value(c) for c in r])
    return columns or [], rows


def xlsx_value(cell):
    """Excel stores dates as date-times; a date-only number format means a date."""
    value = cell.value
    if isinstance(value, datetime.datetime) and "h" not in (cell.number_format or "").lower():
        return value.date().isoformat()
    return norm(value)


def read_parquet(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    types = {f.name: str(f.type) for f in table.schema}
    rows = [[norm(v) for v in row.values()] for row in table.to_pylist()]
    return table.column_names, rows, types


def read_avro(path):
    import fastavro

    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        schema = reader.writer_schema
        names = [field["name"] for field in schema["fields"]]
        docs = [field.get("doc", field["name"]) for field in schema["fields"]]
        rows = [[norm(record[n]) for n in names] for record in reader]
    types = {}
    for field in schema["fields"]:
        branch = [t for t in field["type"] if t != "null"][0]
        types[field.get("doc", field["name"])] = branch if isinstance(branch, str) else branch.get("logicalType", branch["type"])
    return docs, rows, types


def main():
    fmt, path = sys.argv[1], sys.argv[2]
    types = {}
    if fmt == "csv":
        columns, rows = read_csv(path)
    elif fmt in ("json", "ndjson"):
        columns, rows = read_json(path, fmt == "ndjson")
    elif fmt == "xlsx":
        columns, rows = read_xlsx(path)
    elif fmt == "parquet":
        columns, rows, types = read_parquet(path)
    elif fmt == "avro":
        columns, rows, types = read_avro(path)
    else:
        raise SystemExit(f"unknown format {fmt}")
    json.dump({"columns": columns, "rows": rows, "types": types, "sheets": SHEETS}, sys.stdout)


if __name__ == "__main__":
    main()
