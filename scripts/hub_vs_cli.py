"""A 5,000-row import (`--rows`) through the hub (a real headless Chromium: choose the file,
see its check, then from the click on Upload and import until the page says completed)
against the same import
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
    parser.add_argument("--detail", action="store_true", help="print each hub run's requests with their times")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="ferry-hub-bench-")
    hub, cli, from_choice = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page()
        # Where a hub run's time goes: each request's start and end, in seconds
        # from the run's start (Playwright's own clock: monotonic, not the page's).
        marks = []
        # The page's own clock, from the form's submit (the click) to the first
        # frame the import shows `completed`: what a person waits for, without
        # Playwright's actionability checks around its click (two animation frames
        # of "stable", ~35-45 ms here). Reported through the console, which
        # outlives the navigation that follows.
        page.add_init_script(
            """(() => {
                 let submitted = 0, reported = false;
                 document.addEventListener('submit', () => { submitted = performance.now(); reported = false; }, true);
                 const check = () => {
                   const state = document.querySelector('[data-field="state"]');
                   if (submitted && !reported && state && state.textContent === 'completed') {
                     reported = true;
                     console.log('hub-time ' + (performance.now() - submitted));
                   }
                   requestAnimationFrame(check);
                 };
                 requestAnimationFrame(check);
               })()"""
        )
        in_page = []
        page.on("console", lambda m: in_page.append(float(m.text.split()[1]) / 1000) if m.text.startswith("hub-time ") else None)

        page.on("request", lambda r: marks.append(("start", r.method, r.url, time.monotonic())))
        page.on("requestfinished", lambda r: marks.append(("end", r.method, r.url, time.monotonic())))
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
                    marks.clear()
                    chose = time.monotonic()
                    page.set_input_files("#file", str(path))
                    # The person sees the check before importing, then clicks: the
                    # clock starts at the click, as the CLI's starts with the file
                    # already named (choosing a file is neither door's work).
                    expect(page.locator("#preview-rows tbody tr").first).to_be_visible()
                    button = page.get_by_role("button", name="Upload and import")
                    button.scroll_into_view_if_needed()
                    start = time.monotonic()
                    button.click()
                    # Checked on every frame: `expect` polls at up to 1 s intervals,
                    # which would be measured as the hub's time.
                    page.wait_for_function(
                        "() => document.querySelector('[data-field=\"state\"]')?.textContent === 'completed'",
                        polling="raf",
                        timeout=120_000,
                    )
                    hub.append(time.monotonic() - start)
                    from_choice.append(time.monotonic() - chose)
                    # The page then opens the import's page; let it, before the next.
                    page.wait_for_url(re.compile(r"/hub/imports/[0-9a-f-]+$"), timeout=30_000)
                    expect(page.locator("[data-live-kind]")).to_have_attribute("data-live-ids", "", timeout=30_000)
                detail = " (%.3f s from choosing the file)" % from_choice[-1] if door == "hub" else ""
                print("run %d %s: %.3f s%s" % (run, door, (cli if door == "cli" else hub)[-1], detail), flush=True)
                if door == "hub" and args.detail:
                    for what, method, url, at in marks:
                        if at - start <= hub[-1] + 0.05 and at >= start:
                            path = url.split("://", 1)[-1].split("/", 1)[-1][:60]
                            print("    %.3f %-5s %s /%s" % (at - start, what, method, path))
        browser.close()
    shutil.rmtree(folder, ignore_errors=True)
    ratio = statistics.median(in_page) / statistics.median(cli)
    print("hub in the page (submit to completed), each run: %s" % ", ".join("%.3f" % t for t in in_page))
    print("median hub %.3f s in the page (%.3f s from Playwright's click, %.3f s from choosing the file), "
          "median CLI %.3f s, hub / CLI = %.2f (from the click: %.2f)"
          % (statistics.median(in_page), statistics.median(hub), statistics.median(from_choice),
             statistics.median(cli), ratio, statistics.median(hub) / statistics.median(cli)))


if __name__ == "__main__":
    main()
