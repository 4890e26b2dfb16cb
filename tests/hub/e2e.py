"""The bulk imports hub, driven end to end in a real headless Chromium (Debian's
`chromium`, Playwright for Python pinned to 1.64.1), against a real `ferry serve`.

Run by `tests/it/hub.rs` (both backends), which starts the server, makes the keys,
and checks afterwards over gRPC what this script saw on the pages. Protocol on
stdout: `REVOKE` (the driver revokes HUB_REVOCABLE_KEY and answers a line on
stdin), then `RESULT <json>`. Any failed check raises: the exit status says so.

Every page is checked with axe-core (WCAG 2.1 AA) and photographed at 1280 and
375 px into HUB_SHOTS.
"""

import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

from playwright.sync_api import expect, sync_playwright

URL = os.environ["HUB_URL"].rstrip("/")
KEY = os.environ["HUB_KEY"]
EXPORT_KEY = os.environ["HUB_EXPORT_KEY"]
REVOCABLE_KEY = os.environ["HUB_REVOCABLE_KEY"]
SHOTS = pathlib.Path(os.environ["HUB_SHOTS"])
AXE = pathlib.Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
ROWS = int(os.environ.get("HUB_ROWS", "5000"))
# Jobs on one page at once, each a dry run long enough to update many times.
LIVE_JOBS = 50
LIVE_ROWS = 2000
BLOCKER_ROWS = 100000
# Long enough for a 5,000-row import on a busy CI machine.
JOB_TIMEOUT_MS = 120_000

SHOTS.mkdir(parents=True, exist_ok=True)
# CI runs this beside the rest of the suite on two cores: assertions wait longer
# than Playwright's 5 s before they fail.
expect.set_options(timeout=20_000)
BACKEND = os.environ.get("HUB_BACKEND", "sqlite")
# What the page may never run: a header and cells that are HTML and script.
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def people_file(folder):
    """ROWS rows: every tenth fails (an unknown status); one failing cell and one
    header are HTML with script. The file name is HTML too."""
    path = pathlib.Path(folder) / "people-<b onclick=alert(1)>5000.csv"
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write('tax_id,type,country_code,suggested_name,status,"%s"\n' % PAYLOAD.replace('"', '""'))
        for i in range(ROWS):
            status = "active" if i % 10 != 9 else "not-a-status"
            if i == 9:
                status = PAYLOAD
            out.write('HUB%06d,person,MX,Person %d,"%s",note %d\n' % (i, i, status.replace('"', '""'), i))
    return path


def axe_check(page, name):
    """axe-core on the page as it is: no WCAG 2.1 AA violation."""
    # Evaluated over the DevTools protocol: the page's CSP (no inline script) stays
    # on, and would refuse a <script> tag.
    page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    result = page.evaluate(
        """() => axe.run(document, {runOnly: {type: 'tag',
             values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})"""
    )
    violations = [
        {"id": v["id"], "help": v["help"], "nodes": [n["html"][:200] for n in v["nodes"][:3]]}
        for v in result["violations"]
    ]
    assert not violations, "%s: axe-core violations: %s" % (name, json.dumps(violations, indent=1))


def shoot(browser, state, path_, name):
    """The page at 1280 and 375 px wide, signed in as `state` (a storage state)."""
    for width in (1280, 375):
        context = browser.new_context(viewport={"width": width, "height": 900}, storage_state=state)
        page = context.new_page()
        page.goto(URL + path_)
        page.wait_for_load_state("networkidle")
        if width == 375:
            # Nothing wider than the screen but the tables' own scrolling regions.
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, "%s is %d px wider than a 375 px screen" % (name, overflow)
        page.screenshot(path=str(SHOTS / ("%s-%s-%d.png" % (BACKEND, name, width))))
        context.close()


def never_ran_script(page):
    assert page.evaluate("() => window.__pwned === undefined"), "a payload ran as script"


def wait_until_ended(page):
    """On an import's page: the state is shown live and the page reloads at the end."""
    expect(page.locator('[data-field="state"]').first).to_have_text(
        re.compile("^(completed|failed|cancelled)$"), timeout=JOB_TIMEOUT_MS
    )
    # The page reloads itself once the job ended (to list the failed rows); the
    # reloaded page follows no job any more.
    expect(page.locator("[data-live-kind]")).to_have_attribute("data-live-ids", "", timeout=JOB_TIMEOUT_MS)
    page.wait_for_load_state("networkidle")


def counters(page):
    def number(field):
        return int(page.locator('[data-field="%s"]' % field).first.inner_text())

    return {name: number(name) for name in ("created", "updated", "unchanged", "failed")}


def dry_run_of(page, csrf, name, prefix, rows):
    """Queues a dry run of `rows` persons over REST, as the page's own script would."""
    text = "tax_id,type,country_code,suggested_name\n" + "".join(
        "%s%06d,person,MX,%s %d\n" % (prefix, i, prefix, i) for i in range(rows)
    )
    answer = page.request.post(
        URL + "/batch-import/import/entities",
        headers={"x-csrf-token": csrf},
        multipart={
            "file": {"name": name, "mimeType": "text/csv", "buffer": text.encode()},
            "entityImportMode": "manual",
            "validateOnly": "true",
        },
    )
    assert answer.status == 202, answer.text()


def upload(page, path, *, dry_run=False, fields=None, mode="Manual"):
    """Chooses the file (which the page uploads at once, ahead of the import),
    fills step 2 and imports; returns the import request the click sent."""
    page.goto(URL + "/hub/imports")
    with page.expect_response(re.compile(r"/batch-import/import/entities/staged$")) as staged:
        page.set_input_files("#file", str(path))
    assert staged.value.status == 201, staged.value.text()
    # The check before importing appears above the form's options: wait for it, so
    # a click is never aimed at a control that moves.
    expect(page.locator("#preview-summary")).to_contain_text("rows are shown")
    page.get_by_role("radio", name=re.compile("^%s" % mode)).check()
    if dry_run:
        page.get_by_label(re.compile("Validate only")).check()
    if fields:
        page.get_by_text("More options").click()
    for label, value in (fields or {}).items():
        page.get_by_label(label).fill(value)
    with page.expect_request(re.compile(r"/batch-import/import/entities$")) as sent:
        page.get_by_role("button", name="Upload and import").click()
    # The import names the file uploaded ahead instead of sending it again.
    body = sent.value.post_data_buffer or b""
    assert b'name="stagedId"' in body and b'name="file"' not in body, body[:300]


def main():
    result = {}
    folder = tempfile.mkdtemp(prefix="ferry-hub-")
    people = people_file(folder)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        script_errors = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))

        # Sign in: a wrong key is refused on the page, the right one opens the hub.
        response = page.goto(URL + "/hub")
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"], headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], headers
        assert headers["x-frame-options"] == "DENY", headers
        axe_check(page, "sign-in")
        page.screenshot(path=str(SHOTS / ("%s-sign-in-1280.png" % BACKEND)))
        page.get_by_label("API key").fill("fk_not_a_real_key")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("key")
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(URL + "/hub/imports")
        cookie = next(c for c in context.cookies() if c["name"] == "ferry_hub")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
        assert KEY not in page.content(), "the key reached the page"
        assert page.evaluate("() => document.cookie").find("ferry_hub") < 0, "script can read the session"
        axe_check(page, "imports (empty)")
        # One page load, stylesheet and script included (a fresh browser: nothing
        # cached), before any upload.
        cold = browser.new_context(storage_state=context.storage_state())
        cold_page = cold.new_page()
        cold_page.goto(URL + "/hub/imports")
        cold_page.wait_for_load_state("networkidle")
        page_bytes = cold_page.evaluate(
            """() => performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
                 .reduce((sum, e) => sum + (e.transferSize || e.encodedBodySize || 0), 0)"""
        )
        cold.close()
        result["page_bytes"] = page_bytes
        assert 0 < page_bytes < 100_000, "the imports page weighs %d bytes" % page_bytes

        # Check before importing: where each header goes and the first rows, as the
        # import reads them, shown as text (one header is HTML with script).
        page.set_input_files("#file", str(people))
        expect(page.locator("#preview-summary")).to_contain_text("the first 10 rows")
        columns = page.locator("#preview-columns tbody tr")
        expect(columns).to_have_count(6)
        expect(columns.nth(0)).to_contain_text("tax_id — platform column")
        expect(columns.nth(5).locator("td").first).to_have_text(PAYLOAD)
        expect(page.locator("#preview-rows tbody tr")).to_have_count(10)
        never_ran_script(page)
        axe_check(page, "preview")
        page.locator("#upload-form").screenshot(path=str(SHOTS / ("%s-preview-1280.png" % BACKEND)))

        # A bad field is named next to the field, as the REST door names it.
        upload(page, people, fields={"Shareholder depth": "9"})
        expect(page.locator("#depth-error")).to_contain_text("0 to 5")
        expect(page.locator("#depth")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#upload-errors")).to_be_focused()
        axe_check(page, "upload form with errors")

        # Dry run: counts what would happen, writes nothing (the driver checks the
        # real import still creates every valid row).
        upload(page, people, dry_run=True)
        page.wait_for_url(re.compile(r"/hub/imports/[0-9a-f-]+$"), timeout=JOB_TIMEOUT_MS)
        wait_until_ended(page)
        dry = counters(page)
        result["dry_run"] = {"id": page.url.rsplit("/", 1)[1], **dry}
        assert dry["created"] == ROWS - ROWS // 10 and dry["failed"] == ROWS // 10, dry
        expect(page.locator("h1")).to_contain_text("dry run")

        # The real import: progress while it runs, the counters at the end.
        upload(page, people)
        page.wait_for_url(re.compile(r"/hub/imports/[0-9a-f-]+$"), timeout=JOB_TIMEOUT_MS)
        import_id = page.url.rsplit("/", 1)[1]
        import_path = "/hub/imports/" + import_id
        wait_until_ended(page)
        expect(page.locator('[data-field="state"]')).to_have_text("completed")
        # Who started it: the name of the key the session stands for.
        expect(page.locator(".by").first).to_have_text("hub")
        done = counters(page)
        result["import"] = {"id": import_id, **done}
        assert done["created"] == ROWS - ROWS // 10 and done["failed"] == ROWS // 10, done
        # The file name, a failed cell and the header are shown as text, never run.
        expect(page.locator("h1")).to_contain_text("people-<b onclick=alert(1)>5000.csv")
        expect(page.locator("td.value").first).to_contain_text("<script>")
        never_ran_script(page)
        # Failed rows, page by page, in file order: line 11 is the first (header = 1).
        first_line = page.locator("table.failed tbody tr td").first.inner_text()
        assert first_line == "11", first_line
        page.get_by_role("link", name="Next page").click()
        expect(page.locator("table.failed tbody tr").first).to_be_visible()
        assert int(page.locator("table.failed tbody tr td").first.inner_text()) > 11
        page.goto(URL + import_path)
        axe_check(page, "import")
        with page.expect_download() as download:
            page.get_by_role("link", name=re.compile("error report")).click()
        report = pathlib.Path(download.value.path()).read_text(encoding="utf-8")
        assert report.count("\n") >= ROWS // 10, report[:300]

        # Fix a failed row in the page and import only it, linked to the first.
        page.goto(URL + import_path)
        page.get_by_role("link", name=re.compile("^Fix the failed rows")).click()
        expect(page.locator("h1")).to_contain_text("Fix the failed rows")
        axe_check(page, "fix")
        page.screenshot(path=str(SHOTS / ("%s-fix-1280.png" % BACKEND)))
        cell = page.get_by_label("status, line 11", exact=True)
        expect(cell).to_have_attribute("aria-invalid", "true")
        expect(cell).to_have_value(PAYLOAD)
        cell.fill("active")
        page.get_by_role("button", name="Import the changed rows").click()
        page.wait_for_url(re.compile(r"/hub/imports/[0-9a-f-]+$"), timeout=JOB_TIMEOUT_MS)
        assert page.url.rsplit("/", 1)[1] != import_id
        wait_until_ended(page)
        fixed = counters(page)
        assert fixed["created"] == 1 and fixed["failed"] == 0, fixed
        expect(page.get_by_role("link", name="an earlier import")).to_have_attribute("href", import_path)
        result["fixed"] = {"id": page.url.rsplit("/", 1)[1], **fixed}
        never_ran_script(page)

        # A template, downloaded and imported unchanged, imports with no failure:
        # its demo tax IDs are drawn anew and valid for their country.
        for mode, kind, rows in (("automatic", "csv", 6), ("manual", "xlsx", 8)):
            page.goto(URL + "/hub/imports")
            with page.expect_download() as download:
                page.get_by_role("link", name="%s mode, %s" % (mode.capitalize(), kind.upper())).click()
            template = pathlib.Path(folder) / download.value.suggested_filename
            download.value.save_as(template)
            assert template.name == "bulk-entities-%s.%s" % (mode, kind), template.name
            upload(page, template, mode=mode.capitalize())
            page.wait_for_url(re.compile(r"/hub/imports/[0-9a-f-]+$"), timeout=JOB_TIMEOUT_MS)
            wait_until_ended(page)
            shown = counters(page)
            assert shown["failed"] == 0 and shown["created"] == rows, (mode, shown)
            result["template_" + mode] = {"id": page.url.rsplit("/", 1)[1], **shown}

        # The mapping editor: a custom layout's headers come from the file, each
        # suggested by the organization's earlier mapping ("Planilla ventas") or by
        # name; a wrong column is named in its row; the first rows are shown as they
        # would be stored and follow every change.
        custom = pathlib.Path(folder) / "ventas.csv"
        custom.write_text(
            "Documento,Tipo de entidad,País,Razón social,Segmento\n"
            "MAP001,company,MX,Ventas Uno SA,retail\nMAP002,person,MX,Ana Ventas,pyme\nMAP003,company,MX,Ventas Tres,retail\n",
            encoding="utf-8",
        )
        page.goto(URL + "/hub/mappings")
        axe_check(page, "mappings")
        page.get_by_role("link", name="New mapping from a file").click()
        expect(page.locator("h1")).to_have_text("New column mapping")
        page.set_input_files("#mapping-file", str(custom))
        documento = page.get_by_label("Platform column for Documento")
        expect(documento).to_have_value("tax_id")
        expect(page.locator('tr[data-header="Documento"]')).to_contain_text("suggested: your earlier mapping")
        expect(page.locator('tr[data-header="Documento"] [data-field="result"]')).to_contain_text("tax_id (by this mapping)")
        segmento = page.get_by_label("Platform column for Segmento")
        expect(segmento).to_have_value("")
        expect(page.locator('tr[data-header="Segmento"] [data-field="result"]')).to_contain_text("attributes.segmento")
        expect(page.locator("#mapping-rows thead th").first).to_contain_text("tax_id")
        expect(page.locator("#mapping-rows tbody tr")).to_have_count(3)
        # A column that no longer exists is named in its row, from the server's check.
        segmento.fill("checks")
        expect(page.locator('tr[data-header="Segmento"] [data-field="result"]')).to_contain_text(
            "execute_all_active_enrichments"
        )
        expect(segmento).to_have_attribute("aria-invalid", "true")
        segmento.fill("attributes.segment_tag")
        expect(page.locator('tr[data-header="Segmento"] [data-field="result"]')).to_contain_text(
            "attributes.segment_tag (by this mapping)"
        )
        expect(page.locator("#mapping-rows thead th").nth(4)).to_contain_text("attributes.segment_tag")
        page.screenshot(path=str(SHOTS / ("%s-mapping-editor-1280.png" % BACKEND)), full_page=True)
        # Saving without a name names the field.
        page.get_by_role("button", name="Save mapping").click()
        expect(page.locator("#name-error")).to_contain_text("1 to 200")
        axe_check(page, "mapping editor")
        page.get_by_label("Name", exact=True).fill("Ventas 2026")
        page.get_by_label("The files hold").select_option("entity_mixed")
        page.get_by_role("button", name="Save mapping").click()
        page.wait_for_url(re.compile(r"/hub/mappings/[0-9a-f-]+\?saved=1$"))
        mapping_id = page.url.split("/hub/mappings/", 1)[1].split("?", 1)[0]
        expect(page.locator("#mapping-notice")).to_contain_text("Saved.")
        expect(page.get_by_label("Platform column for segmento")).to_have_value("attributes.segment_tag")
        expect(page.locator('tr[data-header="segmento"] [data-field="result"]')).to_have_text(
            "attributes.segment_tag (by this mapping)"
        )
        shoot(browser, context.storage_state(), "/hub/mappings/" + mapping_id, "mapping")
        # Renamed in the same editor (the saved object keeps its id).
        page.get_by_label("Name", exact=True).fill("Ventas MX")
        page.get_by_role("button", name="Save mapping").click()
        # The page is rendered anew from the saved object.
        expect(page.locator("h1")).to_have_text("Mapping Ventas MX")
        expect(page.get_by_label("Name", exact=True)).to_have_value("Ventas MX")
        # The earlier mapping is deleted from its editor, after a confirmation.
        page.goto(URL + "/hub/mappings")
        page.get_by_role("link", name="Planilla ventas").click()
        page.get_by_role("button", name="Delete…").click()
        page.get_by_role("button", name="Yes, delete it").click()
        page.wait_for_url(URL + "/hub/mappings?deleted=1")
        expect(page.get_by_role("link", name="Planilla ventas")).to_have_count(0)
        expect(page.get_by_role("link", name="Ventas MX")).to_be_visible()
        result["mapping"] = {"id": mapping_id}

        # The custom file imported with the new mapping picked by name: the check
        # before importing says each header goes there by the mapping.
        page.goto(URL + "/hub/imports")
        page.get_by_label("Saved column mapping").select_option(label="Ventas MX (entity_mixed)")
        page.set_input_files("#file", str(custom))
        expect(page.locator("#preview-columns tbody tr").first).to_contain_text("tax_id — platform column (saved mapping)")
        expect(page.locator("#preview-problems")).to_be_hidden()
        page.get_by_role("radio", name=re.compile("^Manual")).check()
        page.get_by_role("button", name="Upload and import").click()
        page.wait_for_url(re.compile(r"/hub/imports/[0-9a-f-]+$"), timeout=JOB_TIMEOUT_MS)
        wait_until_ended(page)
        shown = counters(page)
        assert shown["created"] == 3 and shown["failed"] == 0, shown
        result["mapped"] = {"id": page.url.rsplit("/", 1)[1], **shown}

        # Exports from the same hub: a refused column is named, then a CSV of the
        # Mexican persons is created, followed live and downloaded.
        page.goto(URL + "/hub/exports")
        page.get_by_label(re.compile("^Columns")).fill("tax_id, no_such_column")
        page.get_by_role("button", name="Export").click()
        expect(page.get_by_role("alert")).to_contain_text("no_such_column")
        page.get_by_label(re.compile("^Columns")).fill("tax_id, name, country")
        page.get_by_label("Entities", exact=True).select_option("person")
        page.get_by_label(re.compile("^Countries")).fill("MX")
        page.get_by_role("button", name="Export").click()
        expect(page.get_by_role("link", name="Download").first).to_be_visible(timeout=JOB_TIMEOUT_MS)
        expect(page.locator("tr[data-job] .by").first).to_have_text("by hub")
        axe_check(page, "exports")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download").first.click()
        exported = pathlib.Path(download.value.path()).read_text(encoding="utf-8-sig").splitlines()
        assert exported[0].startswith("tax_id"), exported[:2]
        result["export_rows"] = len(exported) - 1
        state = context.storage_state()
        shoot(browser, state, "/hub/exports", "exports")

        page.goto(URL + "/hub/imports")
        expect(page.locator("td").filter(has_text="people-<b onclick=alert(1)>5000.csv").first).to_be_visible()
        expect(page.locator("tr[data-job] .by").first).to_have_text("by hub")
        never_ran_script(page)
        axe_check(page, "imports")
        state = context.storage_state()
        shoot(browser, state, "/hub/imports", "imports")
        shoot(browser, state, import_path, "import")

        # Without the page's CSRF token a signed-in browser's POST is refused.
        refused = page.request.post(
            URL + "/batch-import/import/entities",
            multipart={"file": {"name": "x.csv", "mimeType": "text/csv", "buffer": b"tax_id,type\n"}},
        )
        assert refused.status == 403 and refused.json()["error"]["code"] == "CSRF_TOKEN_INVALID", refused.text()
        refused = page.request.post(URL + "/hub/sign-out", form={"csrf": "forged"})
        assert refused.status == 403, refused.status

        # Sign out ends the session: the old cookie no longer opens a page or a route.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("status")).to_contain_text("signed out")
        old = browser.new_context()
        old.add_cookies([cookie])
        stale = old.new_page()
        stale.goto(URL + "/hub/imports")
        expect(stale.get_by_role("button", name="Sign in")).to_be_visible()
        answer = stale.request.get(URL + "/batch-import/import/entities/" + import_id)
        assert answer.status == 401, answer.status
        old.close()

        # Keyboard only: sign in with the export-only key without touching the mouse.
        keys_only = browser.new_context(viewport={"width": 375, "height": 800})
        kb = keys_only.new_page()
        kb.goto(URL + "/hub")
        for _ in range(10):
            kb.keyboard.press("Tab")
            if kb.evaluate("() => document.activeElement && document.activeElement.id") == "key":
                break
        kb.keyboard.type(EXPORT_KEY)
        kb.keyboard.press("Enter")
        # A key without entities:bulk_import sees no upload, and the route refuses it.
        expect(kb.get_by_role("alert")).to_contain_text("entities:bulk_import")
        assert kb.locator("#upload-form").count() == 0
        axe_check(kb, "refused")
        kb.screenshot(path=str(SHOTS / ("%s-refused-375.png" % BACKEND)), full_page=True)
        csrf = kb.locator('meta[name="csrf-token"]').get_attribute("content")
        answer = kb.request.post(
            URL + "/batch-import/import/entities",
            headers={"x-csrf-token": csrf},
            multipart={"file": {"name": "x.csv", "mimeType": "text/csv", "buffer": b"tax_id,type\n"}},
        )
        assert answer.status == 403 and answer.json()["error"]["code"] == "MISSING_PERMISSION", answer.text()
        keys_only.close()

        # 50 live jobs on one page: every update lands without a long task (none over
        # 50 ms on the main thread) and without shifting the layout.
        busy = browser.new_context(viewport={"width": 1280, "height": 900})
        bp = busy.new_page()
        bp.goto(URL + "/hub")
        bp.get_by_label("API key").fill(KEY)
        bp.get_by_role("button", name="Sign in").click()
        expect(bp).to_have_url(URL + "/hub/imports")
        csrf = bp.locator('meta[name="csrf-token"]').get_attribute("content")
        # Two long dry runs go first (the server runs one job at a time), so the 50
        # are still queued when the page loads and run while it watches.
        for n in range(2):
            dry_run_of(bp, csrf, "blocker-%d.csv" % n, "BLOCK", BLOCKER_ROWS)
        for n in range(LIVE_JOBS):
            dry_run_of(bp, csrf, "live-%02d.csv" % n, "LIVE", LIVE_ROWS)
        bp.add_init_script(path=str(pathlib.Path(__file__).parent / "observe_main_thread.js"))
        bp.goto(URL + "/hub/imports")
        followed = len(bp.locator("[data-live-kind]").get_attribute("data-live-ids").split(","))
        expect(bp.locator('tr[data-job] [data-field="state"]').filter(has_text=re.compile("queued|running"))).to_have_count(
            0, timeout=JOB_TIMEOUT_MS
        )
        seen = bp.evaluate(
            """() => Object.assign({}, window.__hubObserved, {
                 updates: performance.getEntriesByName('hub-update').length,
                 slowestUpdate: Math.max(0, ...performance.getEntriesByName('hub-update').map(e => e.duration)) })"""
        )
        result["live"] = {"followed": followed, **seen}
        # On a slow machine an upload may take as long as a blocker: a few of the 50
        # may end before the page loads.
        assert followed >= LIVE_JOBS - 5, "only %d jobs were still running at load" % followed
        # Every update's own work stays far below 50 ms. Long tasks are recorded too,
        # but not asserted: on CI's two busy cores a task can wait for the CPU.
        assert seen["updates"] >= LIVE_JOBS, "only %d updates arrived" % seen["updates"]
        assert seen["slowestUpdate"] < 50, "an update took %.1f ms" % seen["slowestUpdate"]
        assert seen["layoutShift"] < 0.01, "the layout shifted while jobs updated: %s" % seen["layoutShift"]
        busy.close()

        # A revoked key's session ends within the auth cache's bound.
        revocable = browser.new_context()
        rv = revocable.new_page()
        rv.goto(URL + "/hub")
        rv.get_by_label("API key").fill(REVOCABLE_KEY)
        rv.get_by_role("button", name="Sign in").click()
        expect(rv).to_have_url(URL + "/hub/imports")
        print("REVOKE", flush=True)
        sys.stdin.readline()
        deadline = time.monotonic() + 10
        while True:
            rv.goto(URL + "/hub/imports")
            if "/hub/imports" not in rv.url:
                break
            assert time.monotonic() < deadline, "the revoked key's session still works"
            time.sleep(0.25)
        expect(rv.get_by_role("status")).to_contain_text("no longer works")
        revocable.close()
        browser.close()
    assert not script_errors, "script errors on the pages: %s" % script_errors
    shutil.rmtree(folder, ignore_errors=True)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
