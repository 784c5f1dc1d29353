// koth dashboard: live updates. The page is complete without this script; with it, every event
// on /api/events (server-sent events, same origin) schedules one re-fetch of the page's changing
// part (`?partial=1`), which replaces <main id="live">. Bursts of events (a duel reports every
// batch, the chain ticks every block) are coalesced into one fetch at a time.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var conn = document.getElementById("conn");
  if (!live || !window.EventSource || !window.fetch) {
    return;
  }
  var KINDS = ["started", "recovered", "tick", "revealed", "gate_started", "gate_passed",
    "gate_failed", "infra_fault", "duel_started", "duel_progress", "duel_finished", "crowned",
    "weights_set"];
  var DELAY_MS = 400;
  var timer = null;
  var busy = false;
  var again = false;
  var lastSeq = null;
  var updates = 0;

  function say(text, on) {
    if (conn) {
      conn.textContent = text;
      conn.className = on ? "conn on" : "conn";
    }
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url.toString(), { cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        updates += 1;
        document.body.setAttribute("data-updates", String(updates));
        if (lastSeq !== null) {
          document.body.setAttribute("data-last-event", lastSeq);
        }
      })
      .catch(function (e) {
        say("live: update failed (" + e.message + "), retrying", false);
      })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          schedule();
        }
      });
  }

  function schedule() {
    if (timer === null) {
      timer = window.setTimeout(function () {
        timer = null;
        refresh();
      }, DELAY_MS);
    }
  }

  var source = new EventSource("/api/events");
  source.onopen = function () {
    say("live", true);
  };
  source.onerror = function () {
    // EventSource reconnects by itself (with Last-Event-ID).
    say("live: reconnecting…", false);
  };
  KINDS.forEach(function (kind) {
    source.addEventListener(kind, function (ev) {
      lastSeq = ev.lastEventId;
      say("live · event " + ev.lastEventId + " (" + kind + ")", true);
      schedule();
    });
  });
})();
