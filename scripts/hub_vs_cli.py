"""A 5,000-row import (`--rows`) through the hub (a real headless Chromium: choose the file,
Upload and import, wait for the page to say completed) against the same import
through `ferry import upload --wait`, side by side on one running server,
alternating, each import of fresh rows (so every run creates 5,000 entities).

    python3 scripts/hub_vs_cli.py --ferry target/release/ferry --url http://127.0.0.1:50052 \
        --grpc http://127.0.0.1:50051 --key "$(cat ferry-data/bootstrap-key)" --runs 5

Prints each run's seconds and the ratio of the medians (hub / CLI); the goal is at
most 1.2 (docs/benchmarks.md). Needs Playwright for Python and Debian's chromium.
"""

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

def people(folder, tag, rows):
    path = Path(folder) / ("people-%s.csv" % tag)
    with open(path, "w", encoding="utf-8") as out:
        out.write("tax_id,type,country_code,suggested_name,status\n")
        for i in range(rows):
            out.write("%s%06d,person,MX,Person %d,active\n" % (tag, i, i))
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ferry", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="ferry-hub-bench-")
    hub, cli = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page()
        page.goto(args.url + "/hub")
        page.get_by_label("API key").fill(args.key)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(args.url + "/hub/imports")
        stamp = int(time.time())
        for run in range(args.runs):
            # CLI first on even runs, hub first on odd ones: drift hits both.
            order = ("cli", "hub") if run % 2 == 0 else ("hub", "cli")
            for door in order:
                path = people(folder, "B%s%s%d" % (stamp, door[0].upper(), run), args.rows)
                if door == "cli":
                    start = time.monotonic()
                    subprocess.run(
                        [args.ferry, "--server", args.grpc, "--api-key", args.key, "import", "upload",
                         str(path), "--wait"],
                        check=True, stdout=subprocess.DEVNULL,
                    )
                    cli.append(time.monotonic() - start)
                else:
                    page.goto(args.url + "/hub/imports")
                    page.get_by_label("Manual").check()
                    start = time.monotonic()
                    page.set_input_files("#file", str(path))
                    page.get_by_role("button", name="Upload and import").click()
                    page.wait_for_url(re.compile(r"/hub/imports/[0-9a-f-]+$"), wait_until="commit")
                    opened = time.monotonic() - start
                    # Checked on every frame: `expect` polls at up to 1 s intervals,
                    # which would be measured as the hub's time.
                    page.wait_for_function(
                        "() => document.querySelector('[data-field=\"state\"]')?.textContent === 'completed'",
                        polling="raf",
                        timeout=120_000,
                    )
                    hub.append(time.monotonic() - start)
                    # The page reloads itself once the job ended; let it, before the next.
                    expect(page.locator("[data-live-kind]")).to_have_attribute("data-live-ids", "", timeout=30_000)
                detail = " (job page asked for at %.3f s)" % opened if door == "hub" else ""
                print("run %d %s: %.3f s%s" % (run, door, (cli if door == "cli" else hub)[-1], detail), flush=True)
        browser.close()
    shutil.rmtree(folder, ignore_errors=True)
    ratio = statistics.median(hub) / statistics.median(cli)
    print("median hub %.3f s, median CLI %.3f s, hub / CLI = %.2f" % (statistics.median(hub), statistics.median(cli), ratio))


if __name__ == "__main__":
    main()
