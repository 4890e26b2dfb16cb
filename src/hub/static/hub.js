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

  function clearErrors(form) {
    var summary = byId("upload-errors");
    summary.hidden = true;
    summary.textContent = "";
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    form.querySelectorAll(".field-error").forEach(function (el) { el.hidden = true; el.textContent = ""; });
  }

  // The envelope's message in the summary, each detail next to its field (or in
  // the summary when it names a line of the file), focus on the summary.
  function showErrors(form, message, details) {
    var summary = byId("upload-errors");
    var title = document.createElement("p");
    title.textContent = message;
    summary.appendChild(title);
    var list = document.createElement("ul");
    details.forEach(function (d) {
      var field = form.elements.namedItem(d.field);
      var slot = byId(d.field + "-error");
      var text = (d.code && d.code !== "INVALID_ARGUMENT" ? d.code + ": " : "") + d.message;
      if (field && slot) {
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
    data.append("file", file, file.name);
    return data;
  }

  function upload(form) {
    clearErrors(form);
    var input = byId("file");
    if (!input.files.length) {
      showErrors(form, "Choose a file to import first.", [{ field: "file", code: "", message: "no file chosen" }]);
      return;
    }
    send(form, input.files[0], {});
  }

  // Uploads `file` with the form's fields (and `extra` ones) to the form's REST
  // route, with a progress bar; opens the new import's page once it is queued.
  function send(form, file, extra) {
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
        say("upload-status", "Queued. Opening the import…");
        window.location.assign("/hub/imports/" + encodeURIComponent(body.jobId));
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
    var whole = /\.xlsx$/i.test(file.name);
    var data = new FormData();
    data.append("file", whole ? file : file.slice(0, PREVIEW_BYTES), file.name);
    var mapping = form.elements.namedItem("mappingId");
    if (mapping && mapping.value.trim()) { data.append("mappingId", mapping.value.trim()); }
    say("preview-summary", "Reading the file…");
    fetch("/batch-import/import/entities/preview", {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-csrf-token": csrf, accept: "application/json" },
      body: data
    }).then(function (r) {
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

  function setupUpload() {
    var form = byId("upload-form");
    if (!form) { return; }
    var zone = byId("drop-zone");
    var input = byId("file");
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        say("upload-status", "Chosen: " + input.files[0].name);
        preview(form);
      }
    });
    form.addEventListener("submit", function (e) { e.preventDefault(); upload(form); });
    input.addEventListener("change", function () { preview(form); });
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

  // One events stream for every job of the box (a browser opens at most six
  // connections per host); a dropped stream is reopened for the jobs still running.
  function follow(box, ids, ended, retries) {
    var kind = box.getAttribute("data-live-kind");
    var base = kind === "export" ? "/v1/exports/events-url" : "/batch-import/import/entities/events-url";
    fetch(base + "?ids=" + encodeURIComponent(ids.join(",")), { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (answer) {
        var url = new URL(answer.url, window.location.href);
        var source = new EventSource(url.pathname + url.search);
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

  function start() { setupUpload(); setupLive(); setupCancel(); setupFix(); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
}());
