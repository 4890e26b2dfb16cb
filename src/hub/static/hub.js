// ferry bulk imports hub: uploads with a progress bar, live job updates over the
// signed events stream, cancel. Every action is a REST call carrying the session
// cookie (sent by the browser) and the page's CSRF token; the API key never
// reaches this script. Text from the server is set with textContent, never as HTML.
(function () {
  "use strict";

  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var TERMINAL = { JOB_STATE_COMPLETED: 1, JOB_STATE_FAILED: 1, JOB_STATE_CANCELLED: 1, JOB_STATE_EXPIRED: 1 };

  function byId(id) { return document.getElementById(id); }

  function say(id, text) {
    var el = byId(id);
    if (el) { el.textContent = text; }
  }

  // ---- upload ------------------------------------------------------------

  // A form's error summary: the one marked `data-errors`, else the upload form's.
  function summaryOf(form) {
    return form.querySelector("[data-errors]") || byId("upload-errors");
  }

  function clearErrors(form) {
    var summary = summaryOf(form);
    summary.hidden = true;
    summary.textContent = "";
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    form.querySelectorAll(".field-error").forEach(function (el) { el.hidden = true; el.textContent = ""; });
  }

  // The envelope's message in the summary, each detail next to its field (or in
  // the summary when it names a line of the file), focus on the summary.
  function showErrors(form, message, details) {
    var summary = summaryOf(form);
    var title = document.createElement("p");
    title.textContent = message;
    summary.appendChild(title);
    var list = document.createElement("ul");
    details.forEach(function (d) {
      var field = form.elements.namedItem(d.field);
      var slot = byId(d.field + "-error");
      var text = (d.code && d.code !== "INVALID_ARGUMENT" ? d.code + ": " : "") + d.message;
      var header = /^columns\[(.*)\]$/.exec(d.field || "");
      var row = header ? headerRow(form, header[1]) : null;
      if (row) {
        row.querySelector("input").setAttribute("aria-invalid", "true");
        row.querySelector('[data-field="result"]').textContent = text;
      } else if (field && slot) {
        var target = field.length !== undefined && !field.tagName ? field[0] : field;
        target.setAttribute("aria-invalid", "true");
        slot.textContent = text;
        slot.hidden = false;
      }
      var item = document.createElement("li");
      item.textContent = (d.field ? d.field + ": " : "") + text;
      list.appendChild(item);
    });
    if (details.length) { summary.appendChild(list); }
    summary.hidden = false;
    summary.focus();
  }

  function formData(form, file) {
    var data = new FormData();
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.type === "file" || el.disabled) { return; }
      if ((el.type === "checkbox" || el.type === "radio") && !el.checked) { return; }
      if (el.value.trim() === "") { return; }
      data.append(el.name, el.value.trim());
    });
    if (file) { data.append("file", file, file.name); }
    return data;
  }

  // ---- the file, uploaded as soon as it is chosen -----------------------------

  // While the person reads the check and fills step 2, the file is already on
  // its way (`…/entities/staged`); the import then names it (`stagedId`) and
  // starts at once. `staging` is the chosen file's upload: {file, id, done, waiters}.
  var staging = null;

  function stage(file) {
    var current = { file: file, id: "", done: false, waiters: [] };
    staging = current;
    var bar = byId("upload-progress");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/batch-import/import/entities/staged");
    xhr.setRequestHeader("x-csrf-token", csrf);
    xhr.setRequestHeader("accept", "application/json");
    var announced = -10;
    xhr.upload.addEventListener("progress", function (e) {
      if (staging !== current || !e.lengthComputable) { return; }
      var percent = Math.floor((e.loaded * 100) / e.total);
      bar.hidden = false;
      bar.value = percent;
      if (percent >= announced + 10) { announced = percent; say("upload-status", "Uploading your file: " + percent + " %"); }
    });
    function finish(id) {
      current.id = id;
      current.done = true;
      if (staging === current) {
        bar.hidden = true;
        say("upload-status", id ? "Your file is uploaded; fill step 2 and import it." : "");
      }
      current.waiters.forEach(function (waiter) { waiter(current); });
      current.waiters = [];
    }
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (ignored) { body = null; }
      // Any refusal (a limit, a lost session) leaves the import to send the file.
      finish(xhr.status === 201 && body && body.stagedId ? body.stagedId : "");
    });
    xhr.addEventListener("error", function () { finish(""); });
    var data = new FormData();
    data.append("file", file, file.name);
    xhr.send(data);
  }

  // Runs `then` once `current` is uploaded (or has failed).
  function whenStaged(current, then) {
    if (current.done) { then(current); } else { current.waiters.push(then); }
  }

  function upload(form) {
    clearErrors(form);
    var input = byId("file");
    if (!input.files.length) {
      showErrors(form, "Choose a file to import first.", [{ field: "file", code: "", message: "no file chosen" }]);
      return;
    }
    var file = input.files[0];
    if (staging && staging.file === file) {
      byId("upload-button").disabled = true;
      whenStaged(staging, function (staged) {
        if (staged.id) { send(form, null, { stagedId: staged.id }, file); } else { send(form, file, {}); }
      });
      return;
    }
    send(form, file, {});
  }

  // Uploads `file` (or names an uploaded one in `extra.stagedId`, with `file` null
  // and `fallback` the file to send if the server no longer has it) with the
  // form's fields (and `extra` ones) to the form's REST route, with a progress
  // bar; follows the new import once it is queued.
  function send(form, file, extra, fallback) {
    var bar = byId("upload-progress");
    var button = byId("upload-button");
    var xhr = new XMLHttpRequest();
    var announced = -10;
    xhr.open("POST", form.getAttribute("action"));
    xhr.setRequestHeader("x-csrf-token", csrf);
    xhr.setRequestHeader("accept", "application/json");
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    say("upload-status", "Uploading…");
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) { return; }
      var percent = Math.floor((e.loaded * 100) / e.total);
      bar.value = percent;
      // Announced in steps of 10 %, not on every event.
      if (percent >= announced + 10) { announced = percent; say("upload-status", "Uploading: " + percent + " %"); }
    });
    xhr.upload.addEventListener("load", function () { say("upload-status", "Uploaded; checking the file…"); });
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (ignored) { body = null; }
      if (xhr.status === 202 && body && body.jobId) {
        bar.hidden = true;
        say("upload-status", "Queued.");
        if (extra.stagedId) { staging = null; }
        followHere(form, body.jobId, body.eventsUrl);
        return;
      }
      var details = body && body.error && body.error.details ? body.error.details : [];
      if (fallback && details.some(function (d) { return d.field === "stagedId"; })) {
        // The uploaded file expired or went: send it again.
        staging = null;
        send(form, fallback, {});
        return;
      }
      button.disabled = false;
      bar.hidden = true;
      say("upload-status", "");
      if (xhr.status === 401) { window.location.assign("/hub?ended=idle"); return; }
      var error = body && body.error ? body.error : { message: "The server answered " + xhr.status + ".", details: [] };
      showErrors(form, error.message, error.details || []);
    });
    xhr.addEventListener("error", function () {
      button.disabled = false;
      bar.hidden = true;
      say("upload-status", "");
      showErrors(form, "The upload was interrupted (network). Try again.", []);
    });
    var data = formData(form, file);
    Object.keys(extra).forEach(function (name) { data.append(name, extra[name]); });
    xhr.send(data);
  }

  // A short import ends while its upload's answer is still on screen: the page
  // follows it right here (the 202 carries its signed events URL) and opens its
  // page once it ends; a longer one opens its page after FOLLOW_HERE_MS, to be
  // followed there. No page load stands between the upload and the result.
  var FOLLOW_HERE_MS = 1500;

  function followHere(form, id, eventsUrl) {
    var panel = byId("upload-follow");
    var target = "/hub/imports/" + encodeURIComponent(id);
    if (!panel || !eventsUrl || !window.EventSource) { window.location.assign(target); return; }
    panel.setAttribute("data-job", id);
    panel.hidden = false;
    var url = new URL(eventsUrl, window.location.href);
    var source = new EventSource(url.pathname + url.search);
    var opened = false;
    var timer = 0;
    function open() {
      if (opened) { return; }
      opened = true;
      window.clearTimeout(timer);
      source.close();
      window.location.assign(target);
    }
    timer = window.setTimeout(open, FOLLOW_HERE_MS);
    source.addEventListener("import", function (e) {
      var job;
      try { job = JSON.parse(e.data); } catch (ignored) { return; }
      update(form, job, {});
      if (TERMINAL[job.state]) { open(); }
    });
    source.addEventListener("error", open);
  }

  // ---- check before importing ----------------------------------------------

  var HOW = {
    platform: "platform column",
    alias: "platform column (alias)",
    mapping: "platform column (saved mapping)",
    attribute: "attribute",
    entity_data: "KYC/KYB data",
    whole_object: "whole object (JSON)",
    not_imported: "Not imported"
  };
  // The beginning of a CSV or NDJSON file is enough to show its header and first
  // rows; an XLSX file is a zip and must go whole (the server bounds it).
  var PREVIEW_BYTES = 256 * 1024;

  function beginning(file) {
    return /\.xlsx$/i.test(file.name) ? file : file.slice(0, PREVIEW_BYTES);
  }

  function cell(tag, text) {
    var el = document.createElement(tag);
    el.textContent = text;
    return el;
  }

  function showPreview(answer) {
    var section = byId("preview");
    var columns = byId("preview-columns").tBodies[0];
    var rows = byId("preview-rows");
    columns.textContent = "";
    rows.tHead.textContent = "";
    rows.tBodies[0].textContent = "";
    var head = document.createElement("tr");
    answer.columns.forEach(function (c) {
      var tr = document.createElement("tr");
      tr.appendChild(cell("td", c.header));
      var where = c.how === "not_imported" ? HOW.not_imported : c.goesTo + " — " + (HOW[c.how] || c.how);
      tr.appendChild(cell("td", where));
      tr.appendChild(cell("td", c.note));
      if (c.how === "not_imported") { tr.className = "skipped"; }
      columns.appendChild(tr);
      var th = cell("th", c.header);
      th.setAttribute("scope", "col");
      head.appendChild(th);
    });
    rows.tHead.appendChild(head);
    answer.rows.forEach(function (r) {
      var tr = document.createElement("tr");
      r.forEach(function (value) { tr.appendChild(cell("td", value)); });
      rows.tBodies[0].appendChild(tr);
    });
    var problems = byId("preview-problems");
    problems.textContent = "";
    if (answer.problems.length) {
      problems.appendChild(cell("p", "This file would be refused as it is:"));
      var list = document.createElement("ul");
      answer.problems.forEach(function (p) { list.appendChild(cell("li", p.field + ": " + p.code + ": " + p.message)); });
      problems.appendChild(list);
      problems.hidden = false;
    } else {
      problems.hidden = true;
    }
    say("preview-summary", answer.columns.length + " columns; the first " + answer.rows.length + " rows are shown.");
    section.hidden = false;
  }

  function preview(form) {
    var input = byId("file");
    var section = byId("preview");
    if (!input.files.length) { section.hidden = true; return; }
    var file = input.files[0];
    var fields = {};
    var mapping = form.elements.namedItem("mappingId");
    if (mapping && mapping.value.trim()) { fields.mappingId = mapping.value.trim(); }
    say("preview-summary", "Reading the file…");
    askPreview(beginning(file), file.name, fields).then(function (r) {
      return r.json().then(function (body) {
        if (r.ok) { showPreview(body); return; }
        section.hidden = false;
        byId("preview-columns").tBodies[0].textContent = "";
        var problems = byId("preview-problems");
        problems.textContent = "";
        problems.appendChild(cell("p", body && body.error ? body.error.message : "The file could not be read (" + r.status + ")."));
        problems.hidden = false;
        say("preview-summary", "");
      });
    }).catch(function () { say("preview-summary", "The file could not be checked (network)."); });
  }

  // A file dropped on `zone` becomes `input`'s file, then `chosen` runs.
  function dropZone(zone, input, chosen) {
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        chosen(input.files[0]);
      }
    });
  }

  // What the import would make of `blob` (a file or its beginning) with the form
  // fields `fields` (`mappingId` or `columns`): the REST preview's answer.
  function askPreview(blob, name, fields) {
    var data = new FormData();
    data.append("file", blob, name);
    Object.keys(fields).forEach(function (field) { data.append(field, fields[field]); });
    return fetch("/batch-import/import/entities/preview", {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-csrf-token": csrf, accept: "application/json" },
      body: data
    });
  }

  function setupUpload() {
    var form = byId("upload-form");
    if (!form) { return; }
    var input = byId("file");
    dropZone(byId("drop-zone"), input, function (file) {
      say("upload-status", "Chosen: " + file.name);
      preview(form);
      stage(file);
    });
    form.addEventListener("submit", function (e) { e.preventDefault(); upload(form); });
    input.addEventListener("change", function () {
      preview(form);
      if (input.files.length) { stage(input.files[0]); }
    });
    var mapping = form.elements.namedItem("mappingId");
    if (mapping) { mapping.addEventListener("change", function () { preview(form); }); }
  }

  // ---- live jobs -----------------------------------------------------------

  function setField(row, name, text) {
    var el = row.querySelector('[data-field="' + name + '"]');
    if (el && el.textContent !== text) { el.textContent = text; }
    return el;
  }

  function update(box, job, ended) {
    var row = box.querySelector('[data-job="' + CSS.escape(job.id) + '"]');
    if (!row) { return; }
    var state = String(job.state || "").replace("JOB_STATE_", "").toLowerCase();
    var stateEl = setField(row, "state", state);
    if (stateEl) { stateEl.className = "state state-" + state; }
    var bar = row.querySelector('[data-field="percent"]');
    if (bar && job.progress) { bar.value = Math.round(job.progress.percent || 0); }
    var progress = job.progress || {};
    var total = progress.rowsTotal === undefined || progress.rowsTotal === null ? "…" : String(progress.rowsTotal);
    setField(row, "counts", (progress.rowsDone || 0) + " / " + total);
    setField(row, "created", String(job.createdItems || 0));
    setField(row, "updated", String(job.updatedItems || 0));
    setField(row, "unchanged", String(job.unchangedItems || 0));
    setField(row, "failed", String(job.failedItems || 0));
    if (TERMINAL[job.state] && !ended[job.id]) {
      ended[job.id] = true;
      if (box.hasAttribute("data-reload-on-end")) { window.setTimeout(function () { window.location.reload(); }, 250); }
    }
  }

  // A signed events URL for `ids`: the one the page came with (first time), else
  // a fresh one from the REST door.
  function eventsUrl(box, kind, ids, retries) {
    var rendered = box.getAttribute("data-events");
    if (rendered && retries === 0) { return Promise.resolve(rendered); }
    var base = kind === "export" ? "/v1/exports/events-url" : "/batch-import/import/entities/events-url";
    return fetch(base + "?ids=" + encodeURIComponent(ids.join(",")), { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (answer) {
        var url = new URL(answer.url, window.location.href);
        return url.pathname + url.search;
      });
  }

  // One events stream for every job of the box (a browser opens at most six
  // connections per host); a dropped stream is reopened for the jobs still running.
  function follow(box, ids, ended, retries) {
    var kind = box.getAttribute("data-live-kind");
    eventsUrl(box, kind, ids, retries)
      .then(function (path) {
        var source = new EventSource(path);
        source.addEventListener(kind, function (e) {
          var start = performance.now();
          try { update(box, JSON.parse(e.data), ended); } catch (ignored) { /* a malformed event is skipped */ }
          // Each update's cost, readable by tools (`performance.getEntriesByName`).
          if (performance.measure) { performance.measure("hub-update", { start: start }); }
        });
        source.addEventListener("error", function () {
          source.close();
          var open = ids.filter(function (id) { return !ended[id]; });
          if (open.length && retries < 20) { window.setTimeout(function () { follow(box, open, ended, retries + 1); }, 2000); }
        });
      })
      .catch(function (status) {
        if (status === 401) { window.location.assign("/hub?ended=idle"); }
      });
  }

  function setupLive() {
    document.querySelectorAll("[data-live-kind]").forEach(function (box) {
      var ids = (box.getAttribute("data-live-ids") || "").split(",").filter(Boolean);
      if (ids.length) { follow(box, ids.slice(0, 50), {}, 0); }
    });
  }

  // ---- cancel --------------------------------------------------------------

  function setupCancel() {
    document.querySelectorAll("[data-cancel]").forEach(function (button) {
      button.addEventListener("click", function () {
        button.disabled = true;
        fetch(button.getAttribute("data-cancel"), {
          method: "POST",
          credentials: "same-origin",
          headers: { "x-csrf-token": csrf, accept: "application/json" }
        }).then(function (r) {
          return r.json().then(function (body) {
            if (r.ok) { say("job-status", "Cancelled."); window.location.reload(); return; }
            button.disabled = false;
            say("job-status", body && body.error ? body.error.message : "Could not cancel (" + r.status + ").");
          });
        }).catch(function () { button.disabled = false; say("job-status", "Could not reach the server."); });
      });
    });
  }

  // ---- fix failed rows --------------------------------------------------------

  function csvCell(text) {
    return /[",\r\n]|^\s|\s$/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  // The changed rows as a CSV file under the report's own header, uploaded as a
  // new import linked to the first.
  function setupFix() {
    var form = byId("fix-form");
    if (!form) { return; }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      clearErrors(form);
      var heads = Array.prototype.slice.call(form.querySelectorAll("#fix-table thead th[data-column]"));
      var lines = [heads.map(function (th) { return csvCell(th.textContent); }).join(",")];
      form.querySelectorAll("tr[data-fix-row]").forEach(function (tr) {
        var inputs = Array.prototype.slice.call(tr.querySelectorAll("input"));
        if (inputs.some(function (i) { return i.value !== i.defaultValue; })) {
          lines.push(inputs.map(function (i) { return csvCell(i.value); }).join(","));
        }
      });
      if (lines.length === 1) {
        showErrors(form, "Change at least one cell first: only the rows you change are imported.", []);
        return;
      }
      var fixes = form.getAttribute("data-fixes");
      var file = new File([lines.join("\r\n") + "\r\n"], "fixes-" + fixes + ".csv", { type: "text/csv" });
      send(form, file, { fixesImportId: fixes });
    });
  }

  // ---- mapping editor ------------------------------------------------------------

  // The editor's row for a header (as the file or the saved mapping names it).
  function headerRow(form, header) {
    var found = null;
    form.querySelectorAll("tr[data-header]").forEach(function (tr) {
      if (tr.getAttribute("data-header") === header) { found = tr; }
    });
    return found;
  }

  // Letters and digits only, lower case: `Tax-ID` and `tax_id` meet as `taxid`.
  function compact(text) { return String(text).toLowerCase().replace(/[^a-z0-9]/g, ""); }

  // A platform column whose name is the header's, punctuation aside.
  function byName(key) {
    var match = "";
    document.querySelectorAll("#targets option").forEach(function (o) {
      if (!match && compact(o.value) === compact(key)) { match = o.value; }
    });
    return match;
  }

  function setupMapping() {
    var form = byId("mapping-form");
    if (!form) { return; }
    var known = {};
    try { known = JSON.parse(form.getAttribute("data-known") || "{}"); } catch (ignored) { known = {}; }
    var id = form.getAttribute("data-mapping-id");
    var body = byId("mapping-columns").tBodies[0];
    var input = byId("mapping-file");
    var chosen = null;
    var timer = 0;

    function rows() { return Array.prototype.slice.call(body.querySelectorAll("tr[data-header]")); }

    function draft() {
      var columns = {};
      rows().forEach(function (tr) {
        var value = tr.querySelector("input").value.trim();
        if (value) { columns[tr.getAttribute("data-header")] = value; }
      });
      return columns;
    }

    function addRow(header, target, why) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-header", header);
      var th = cell("th", header);
      th.setAttribute("scope", "row");
      tr.appendChild(th);
      var td = document.createElement("td");
      var field = document.createElement("input");
      field.type = "text";
      field.setAttribute("list", "targets");
      field.setAttribute("autocomplete", "off");
      field.setAttribute("spellcheck", "false");
      field.setAttribute("aria-label", "Platform column for " + header);
      field.value = target;
      td.appendChild(field);
      if (why) {
        var note = cell("span", why);
        note.className = "hint suggestion";
        td.appendChild(note);
      }
      tr.appendChild(td);
      var result = document.createElement("td");
      result.setAttribute("data-field", "result");
      tr.appendChild(result);
      body.appendChild(tr);
    }

    function showStored(answer) {
      var table = byId("mapping-rows");
      table.tHead.textContent = "";
      table.tBodies[0].textContent = "";
      var head = document.createElement("tr");
      answer.columns.forEach(function (c) {
        var th = cell("th", c.how === "not_imported" ? "not imported" : c.goesTo);
        th.setAttribute("scope", "col");
        th.appendChild(cell("span", " (" + c.header + ")")).className = "hint";
        if (c.how === "not_imported") { th.className = "skipped"; }
        head.appendChild(th);
      });
      table.tHead.appendChild(head);
      answer.rows.forEach(function (r) {
        var tr = document.createElement("tr");
        r.forEach(function (value) { tr.appendChild(cell("td", value)); });
        table.tBodies[0].appendChild(tr);
      });
      var problems = answer.problems.map(function (p) { return p.code + ": " + p.message; });
      say("stored-summary", answer.rows.length + " rows shown." + (problems.length ? " This file would be refused: " + problems.join("; ") : ""));
    }

    function showResults(answer) {
      var seen = {};
      answer.columns.forEach(function (c) {
        var tr = headerRow(form, c.header);
        if (!tr) { return; }
        seen[c.header] = true;
        var how = c.how === "mapping" ? "by this mapping" : HOW[c.how] || c.how;
        var where = c.how === "not_imported" ? "Not imported" : c.goesTo + " (" + how + ")";
        var note = c.note && c.how !== "mapping" ? ": " + c.note : "";
        tr.querySelector('[data-field="result"]').textContent = where + note;
        tr.querySelector("input").removeAttribute("aria-invalid");
        tr.className = c.how === "not_imported" ? "skipped" : "";
      });
      rows().forEach(function (tr) {
        if (!seen[tr.getAttribute("data-header")]) {
          tr.querySelector('[data-field="result"]').textContent = "Not in this file (kept in the mapping)";
        }
      });
    }

    // The file's first rows again with the draft map: the import's own answer.
    function refresh() {
      if (!chosen) { return; }
      var columns = draft();
      var fields = Object.keys(columns).length ? { columns: JSON.stringify(columns) } : {};
      say("stored-summary", "Reading the file…");
      return askPreview(chosen.blob, chosen.name, fields).then(function (r) {
        return r.json().then(function (answer) {
          if (r.ok) { showResults(answer); showStored(answer); return answer; }
          if (r.status === 401) { window.location.assign("/hub?ended=idle"); return null; }
          // Problems are marked in their rows; focus stays where the person types.
          var error = answer && answer.error ? answer.error : { message: "The server answered " + r.status + ".", details: [] };
          var other = [];
          (error.details || []).forEach(function (d) {
            var header = /^columns\[(.*)\]$/.exec(d.field || "");
            var tr = header ? headerRow(form, header[1]) : null;
            if (!tr) { other.push(d.message); return; }
            tr.querySelector("input").setAttribute("aria-invalid", "true");
            tr.querySelector('[data-field="result"]').textContent = "Error: " + d.message;
          });
          say("stored-summary", other.length ? error.message + ": " + other.join("; ") : "Correct the marked column to see the rows again.");
          return null;
        });
      }).catch(function () { say("stored-summary", "The file could not be checked (network)."); return null; });
    }

    function later() {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 300);
    }

    // A new file: its headers become the rows, each keeping what the person (or
    // the saved mapping) gave it, else suggested by name or by an earlier mapping.
    function choose(file) {
      chosen = { blob: beginning(file), name: file.name };
      var before = {};
      rows().forEach(function (tr) { before[tr.getAttribute("data-header")] = tr.querySelector("input").value.trim(); });
      say("stored-summary", "Reading the file…");
      askPreview(chosen.blob, chosen.name, {}).then(function (r) {
        return r.json().then(function (answer) {
          if (!r.ok) {
            var error = answer && answer.error ? answer.error : { message: "The file could not be read (" + r.status + ").", details: [] };
            say("stored-summary", "");
            showErrors(form, error.message, [{ field: "mapping-file", code: "", message: error.message }]);
            return;
          }
          body.textContent = "";
          answer.columns.forEach(function (c) {
            var kept = before[c.header] || before[c.key];
            delete before[c.header];
            delete before[c.key];
            if (kept) { addRow(c.header, kept, ""); return; }
            var platform = c.how === "platform" || c.how === "alias";
            var earlier = known[c.key];
            var named = platform ? "" : byName(c.key);
            if (earlier && !platform) { addRow(c.header, earlier, "suggested: your earlier mapping"); }
            else if (named) { addRow(c.header, named, "suggested: same name"); }
            else { addRow(c.header, "", ""); }
          });
          Object.keys(before).forEach(function (header) { if (before[header]) { addRow(header, before[header], ""); } });
          byId("no-columns").hidden = rows().length > 0;
          refresh();
        });
      }).catch(function () { say("stored-summary", "The file could not be checked (network)."); });
    }

    input.addEventListener("change", function () { if (input.files.length) { choose(input.files[0]); } });
    dropZone(byId("mapping-drop"), input, choose);
    body.addEventListener("input", later);

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      clearErrors(form);
      var columns = draft();
      if (!Object.keys(columns).length) {
        showErrors(form, "Give at least one header a platform column.", [{ field: "columns", code: "", message: "no header is mapped" }]);
        return;
      }
      var button = byId("mapping-save");
      button.disabled = true;
      say("mapping-status", "Saving…");
      fetch(id ? "/batch-import/mappings/" + encodeURIComponent(id) : "/batch-import/mappings", {
        method: id ? "PATCH" : "POST",
        credentials: "same-origin",
        headers: { "x-csrf-token": csrf, accept: "application/json", "content-type": "application/json" },
        body: JSON.stringify({ name: form.elements.namedItem("name").value, kind: form.elements.namedItem("kind").value, columns: columns })
      }).then(function (r) {
        return r.json().then(function (answer) {
          if (r.ok) { window.location.assign("/hub/mappings/" + encodeURIComponent(answer.id) + "?saved=1"); return; }
          button.disabled = false;
          say("mapping-status", "");
          if (r.status === 401) { window.location.assign("/hub?ended=idle"); return; }
          var error = answer && answer.error ? answer.error : { message: "The server answered " + r.status + ".", details: [] };
          showErrors(form, error.message, error.details || []);
        });
      }).catch(function () { button.disabled = false; say("mapping-status", "Could not reach the server."); });
    });

    var remove = byId("mapping-delete");
    if (remove) {
      var confirmBox = byId("delete-confirm");
      remove.addEventListener("click", function () {
        confirmBox.hidden = false;
        remove.setAttribute("aria-expanded", "true");
        byId("mapping-delete-no").focus();
      });
      byId("mapping-delete-no").addEventListener("click", function () {
        confirmBox.hidden = true;
        remove.setAttribute("aria-expanded", "false");
        remove.focus();
      });
      byId("mapping-delete-yes").addEventListener("click", function () {
        fetch("/batch-import/mappings/" + encodeURIComponent(id), {
          method: "DELETE",
          credentials: "same-origin",
          headers: { "x-csrf-token": csrf, accept: "application/json" }
        }).then(function (r) {
          if (r.status === 204) { window.location.assign("/hub/mappings?deleted=1"); return; }
          say("delete-status", "Could not delete (" + r.status + ").");
        }).catch(function () { say("delete-status", "Could not reach the server."); });
      });
    }
  }

  function start() { setupUpload(); setupLive(); setupCancel(); setupFix(); setupMapping(); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
