// Parseq's live admin. Parts of a page that show runs (elements with data-live-scope) are redrawn,
// without reloading the page, when the server says their runs changed; "running for" counts up;
// logs open at their end; the script editor gets line numbers. Plain JavaScript, no framework.
(function () {
  "use strict";

  const liveUrl = document.currentScript && document.currentScript.dataset.liveUrl;
  const ACTIVE_POLL_MS = 2000; // while a run on the page is enqueued or running
  const LIVE_LOG_POLL_MS = 500; // a running run's own page: its log grows as the script prints (live_logs.py)
  const IDLE_POLL_MS = 10000; // otherwise: new runs still show up, just later
  const AFTER_CHANGE_MS = 10000; // a run that just ended may still get its log: keep up with it a while
  let changedAt = -Infinity;

  function regions() {
    return Array.from(document.querySelectorAll("[data-live-scope]"));
  }

  function showsActiveRuns() {
    return document.querySelector('[data-status="enqueued"], [data-status="running"]') !== null;
  }

  async function poll() {
    const found = regions();
    if (!liveUrl || found.length === 0) return;
    const query = new URLSearchParams();
    found.forEach((region) => query.append("scope", region.dataset.liveScope));
    try {
      const answer = await fetch(`${liveUrl}?${query}`, { headers: { Accept: "application/json" } });
      if (!answer.ok) return; // signed out, or the server is restarting: the next poll tries again
      const { fingerprints } = await answer.json();
      const stale = found.filter((region) => fingerprints[region.dataset.liveScope] !== region.dataset.liveFingerprint);
      if (stale.length > 0) {
        changedAt = performance.now();
        await redraw(stale);
      }
    } catch (error) {
      // The network went away for a moment: the next poll tries again.
    }
  }

  async function redraw(stale) {
    const answer = await fetch(window.location.href, { headers: { Accept: "text/html" } });
    if (!answer.ok) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const region of stale) {
      const replacement = fresh.getElementById(region.id);
      if (!replacement) continue;
      if (region.querySelector("#result_list")) {
        redrawList(region, replacement);
      } else {
        region.replaceWith(document.adoptNode(replacement));
        openLogsAtTheEnd(replacement);
      }
    }
    startClocks();
  }

  // A list of the admin keeps its rows, whose checkboxes the admin's own script follows for
  // actions: only their cells are redrawn. When rows come or go, the page is loaded again,
  // unless the user has ticked some, which would be lost: the new rows wait for their next visit.
  function redrawList(region, replacement) {
    const rows = Array.from(region.querySelectorAll("#result_list tbody tr"));
    const freshRows = Array.from(replacement.querySelectorAll("#result_list tbody tr"));
    const key = (row) => row.querySelector("input.action-select")?.value ?? row.textContent;
    const sameRows = rows.length === freshRows.length && rows.every((row, i) => key(row) === key(freshRows[i]));
    if (!sameRows) {
      if (!region.querySelector("input.action-select:checked")) window.location.reload();
      region.dataset.liveFingerprint = replacement.dataset.liveFingerprint;
      return;
    }
    rows.forEach((row, i) => {
      const cells = Array.from(row.cells);
      const freshCells = Array.from(freshRows[i].cells);
      cells.forEach((cell, j) => {
        if (freshCells[j] && !cell.querySelector("input.action-select")) {
          cell.replaceWith(document.adoptNode(freshCells[j]));
        }
      });
    });
    region.dataset.liveFingerprint = replacement.dataset.liveFingerprint;
  }

  function nextPollMs() {
    if (document.querySelector('[data-live-scope^="run:"] [data-status="running"]')) return LIVE_LOG_POLL_MS;
    return showsActiveRuns() || performance.now() - changedAt < AFTER_CHANGE_MS ? ACTIVE_POLL_MS : IDLE_POLL_MS;
  }

  function schedulePoll() {
    window.setTimeout(async () => {
      if (!document.hidden) await poll();
      schedulePoll();
    }, nextPollMs());
  }

  function humanSeconds(seconds) {
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function startClocks() {
    const now = performance.now();
    document.querySelectorAll(".parseq-running-for:not([data-since])").forEach((clock) => {
      clock.dataset.since = String(now);
    });
  }

  function tick() {
    const now = performance.now();
    document.querySelectorAll(".parseq-running-for[data-since]").forEach((clock) => {
      const seconds = Number(clock.dataset.elapsed) + Math.floor((now - Number(clock.dataset.since)) / 1000);
      clock.textContent = `running for ${humanSeconds(seconds)}`;
    });
  }

  function openLogsAtTheEnd(root) {
    root.querySelectorAll(".parseq-log").forEach((log) => {
      log.scrollTop = log.scrollHeight;
    });
  }

  function numberEditorLines() {
    document.querySelectorAll("textarea.parseq-editor").forEach((editor) => {
      const gutter = document.createElement("pre");
      gutter.className = "parseq-gutter";
      gutter.setAttribute("aria-hidden", "true");
      const frame = document.createElement("div");
      frame.className = "parseq-editor-frame";
      editor.replaceWith(frame);
      frame.append(gutter, editor);
      editor.wrap = "off"; // one numbered line per line of code
      const renumber = () => {
        const count = editor.value.split("\n").length;
        gutter.textContent = Array.from({ length: count }, (_, i) => i + 1).join("\n");
        gutter.scrollTop = editor.scrollTop;
      };
      editor.addEventListener("input", renumber);
      editor.addEventListener("scroll", () => {
        gutter.scrollTop = editor.scrollTop;
      });
      renumber();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    openLogsAtTheEnd(document);
    numberEditorLines();
    startClocks();
    window.setInterval(tick, 1000);
    schedulePoll();
  });
})();
