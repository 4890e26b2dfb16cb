"""ferry's Parquet export against DuckDB writing the same rows, side by side.

Runs `ferry bench export` (seeding N entities, exporting them as CSV and Parquet
through the real worker path), then has DuckDB (PyPI `duckdb`) read ferry's own CSV
export of those rows and write it as zstd Parquet, in a child process of its own so
its peak memory is measured the same way (the child's maximum RSS from wait4).
Prints both files' sizes, times and peaks, and the per-column sizes of both files.

    python3 scripts/parquet_vs_duckdb.py --ferry target/release/ferry --rows 1000000 \\
        [--database-url postgres://postgres@127.0.0.1:5432/ferry_bench]

Needs `pip install duckdb pyarrow`. The machine's speed drifts, so run it two or
three times and compare within a run.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

DUCKDB_CHILD = """
import sys, duckdb
duckdb.sql(
    f"COPY (SELECT * FROM read_csv_auto('{sys.argv[1]}')) "
    f"TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd)"
)
"""


def run_measured(command: list[str]) -> tuple[float, float, str]:
    """Seconds, peak RSS in MB and stdout of a child process."""
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if child.returncode != 0:
        sys.exit(f"{command[0]} failed ({child.returncode}):\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


def column_sizes(path: str) -> dict[str, int]:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    sizes: dict[str, int] = {}
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            sizes[column.path_in_schema] = sizes.get(column.path_in_schema, 0) + column.total_compressed_size
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferry", default="target/release/ferry")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="ferry-vs-duckdb-")
    command = [args.ferry, "--data-dir", data_dir]
    if args.database_url:
        command += ["--database-url", args.database_url]
    command += ["bench", "export", "--rows", str(args.rows), "--formats", "csv,parquet", "--rounds", "0"]
    _, _, output = run_measured(command)
    ferry = {}
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] in ("csv", "parquet") and len(fields) == 7:
            ferry[fields[0]] = {"seconds": float(fields[2]), "rows_s": float(fields[3]), "peak": float(fields[6])}
    csv_file = glob.glob(f"{data_dir}/files/exports/*/*/*.csv")[0]
    ferry_parquet = glob.glob(f"{data_dir}/files/exports/*/*/*.parquet")[0]

    duck_parquet = os.path.join(data_dir, "duckdb.parquet")
    duck_seconds, duck_peak, _ = run_measured([sys.executable, "-c", DUCKDB_CHILD, csv_file, duck_parquet])

    rows = args.rows
    print(f"{'writer':<28} {'seconds':>8} {'rows/s':>10} {'file MB':>8} {'peak RSS MB':>12}")
    print(
        f"{'ferry Parquet (from the DB)':<28} {ferry['parquet']['seconds']:>8.2f} {ferry['parquet']['rows_s']:>10.0f} "
        f"{os.path.getsize(ferry_parquet) / 1e6:>8.1f} {ferry['parquet']['peak']:>12.1f}"
    )
    print(
        f"{'DuckDB (from ferry CSV)':<28} {duck_seconds:>8.2f} {rows / duck_seconds:>10.0f} "
        f"{os.path.getsize(duck_parquet) / 1e6:>8.1f} {duck_peak:>12.1f}"
    )
    print(f"(ferry's CSV export of the same rows: {os.path.getsize(csv_file) / 1e6:.1f} MB in {ferry['csv']['seconds']:.2f} s)")
    ours, theirs = column_sizes(ferry_parquet), column_sizes(duck_parquet)
    print(f"\n{'column':<22} {'ferry MB':>9} {'DuckDB MB':>10}")
    for name in sorted(ours, key=lambda n: -ours[n]):
        print(f"{name:<22} {ours[name] / 1e6:>9.2f} {theirs.get(name, 0) / 1e6:>10.2f}")


if __name__ == "__main__":
    main()
