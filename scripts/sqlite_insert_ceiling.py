"""How fast SQLite itself inserts entities into ferry's schema on this machine.

Reads the `entities` schema, an organization id and a stored enrichment plan from
a ferry SQLite database (one `ferry bench import` has filled), then inserts N rows
shaped like the benchmark's into a fresh database with that schema, in ONE
`INSERT … SELECT` whose rows SQLite generates itself: no parsing, no binding, no
per-row statement, one commit. A yardstick for imports into this schema on the same
machine, not a strict ceiling: the one big transaction spills its 16 MiB page cache
into the WAL again and again, while ferry commits every 2,000 rows and checkpoints on
another core (with 4 KiB pages ferry came within 67-100 % of it, docs/benchmarks.md).

    python3 scripts/sqlite_insert_ceiling.py /tmp/bi-s/ferry.db 1000000 [--page-size 4096]

The page size defaults to the source database's (ferry creates databases with 16 KiB
pages; older ones have SQLite's default, 4 KiB).
"""

import argparse
import os
import sqlite3
import time


def main(source: str, rows: int, page_size: int | None) -> None:
    src = sqlite3.connect(source)
    if page_size is None:
        page_size = src.execute("PRAGMA page_size").fetchone()[0]
    ddl = [r[0] for r in src.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'entities' AND sql IS NOT NULL")]
    org, plan = src.execute("SELECT organization_id, enrichment_plan FROM entities LIMIT 1").fetchone()
    target = "/tmp/ferry-sqlite-ceiling.db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(target + suffix):
            os.remove(target + suffix)
    db = sqlite3.connect(target, isolation_level=None)
    for pragma in (f"page_size = {page_size}", "journal_mode = WAL", "synchronous = NORMAL", "cache_size = -16384"):
        db.execute(f"PRAGMA {pragma}")
    for statement in ddl:
        db.execute(statement)
    started = time.time()
    db.execute("BEGIN")
    db.execute(f"""WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
        INSERT INTO entities SELECT
          printf('0199%04x-%04x-7%03x-8000-%012d', i / 65536, i % 65536, i % 4096, i), ?, 'person',
          printf('BENCH%09d', i), 'MX', 'Entity ' || i, NULL, NULL, 'e' || i || '@example.com', NULL,
          NULL, 'active', 0, NULL, NULL, '{{"segment_tag":"seg1","tier":"tier2"}}', '{{}}', ?, 0,
          1764540000000 + i / 100, 1764540000000 + i / 100
        FROM s""", (org, plan))
    db.execute("COMMIT")
    elapsed = time.time() - started
    print(f"{rows} rows in {elapsed:.2f} s: {rows / elapsed:,.0f} rows/s "
          f"({page_size}-byte pages, SQLite {sqlite3.sqlite_version})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="SQLite's own insert speed on ferry's entities schema")
    parser.add_argument("source", help="a ferry SQLite database one `ferry bench import` has filled")
    parser.add_argument("rows", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, help="page size of the fresh database (default: the source's)")
    args = parser.parse_args()
    main(args.source, args.rows, args.page_size)
