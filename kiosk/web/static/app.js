// provstick kiosk console: live dashboard over Server-Sent Events.
// Served from the kiosk itself; the Content-Security-Policy allows no
// inline script, so this file is the only code the pages run.
"use strict";

(function () {
  function text(tag, s) {
    const el = document.createElement(tag);
    el.textContent = s;
    return el;
  }

  function fmtTime(iso) {
    if (!iso) return "";
    return iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
  }

  function change(from, to) {
    if (!from && !to) return "";
    if (from === to) return "note (" + to + ")";
    return (from || "new") + " → " + to;
  }

  function setText(id, v) {
    const el = document.getElementById(id);
    if (el && el.textContent !== String(v)) el.textContent = String(v);
  }

  function render(d) {
    (d.states || []).forEach(function (s) { setText("count-" + s.state, s.n); });
    setText("total-machines", d.machines);
    setText("total-sticks", d.sticks);
    setText("total-hellos", d.hellos);
    setText("total-discrepancies", d.discrepancies < 0 ? "–" : d.discrepancies);
    if (d.counters) setText("workers-busy", d.counters.workers_busy + "/" + d.counters.workers);
    const body = document.getElementById("recent");
    if (body) {
      const rows = (d.recent || []).map(function (ev) {
        const tr = document.createElement("tr");
        tr.appendChild(text("td", fmtTime(ev.at)));
        tr.appendChild(text("td", ev.pid));
        const m = document.createElement("td");
        if (ev.machine) {
          const a = text("a", ev.machine);
          a.href = "/machines/" + encodeURIComponent(ev.machine);
          m.appendChild(a);
        }
        tr.appendChild(m);
        tr.appendChild(text("td", change(ev.from, ev.to)));
        tr.appendChild(text("td", ev.reason));
        tr.appendChild(text("td", ev.actor + "@" + ev.station));
        return tr;
      });
      body.replaceChildren.apply(body, rows);
    }
    setText("live-at", new Date().toISOString().replace("T", " ").replace(/\.\d+Z/, " UTC"));
  }

  function live() {
    if (document.body.dataset.page !== "dashboard" || !window.EventSource) return;
    const p = document.querySelector(".live");
    const es = new EventSource("/events/dashboard");
    es.addEventListener("dashboard", function (e) {
      if (p) p.classList.remove("stale");
      setText("live-status", "live updates");
      render(JSON.parse(e.data));
    });
    es.onerror = function () {
      if (p) p.classList.add("stale");
      setText("live-status", "reconnecting…");
    };
  }

  document.addEventListener("DOMContentLoaded", live);
})();
