// kpc web view: live rack updates over server-sent events, client-side filtering, log tails.
// No dependencies; text is always set with textContent (never parsed as HTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);

  function age(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const pad = (n) => String(n).padStart(2, "0");
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d" + pad(Math.floor((s % 86400) / 3600)) + "h";
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function liveRack(rack) {
    const stuckAfter = JSON.parse(rack.dataset.stuck || "{}");
    const offset = parseFloat(rack.dataset.now) - Date.now() / 1000;
    const now = () => Date.now() / 1000 + offset;
    const grouping = rack.dataset.group;
    const q = $("q");
    const stateSel = $("state");
    const live = $("live-text");
    let lastAnnounce = 0;

    const isStuck = (tr) => {
      const limit = stuckAfter[tr.dataset.state];
      const since = parseFloat(tr.dataset.since);
      return limit !== undefined && !isNaN(since) && now() - since > limit;
    };

    const visible = (tr) => {
      const want = stateSel.value;
      if (want === "stuck" ? !isStuck(tr) : want && tr.dataset.state !== want) return false;
      const needle = q.value.trim().toLowerCase();
      if (!needle) return true;
      const d = tr.dataset;
      return [d.mac, d.name, d.bmc, d.address, d.state].some((v) => (v || "").toLowerCase().includes(needle));
    };

    function refreshRow(tr) {
      const stuck = isStuck(tr);
      tr.classList.toggle("stuck", stuck);
      const flag = tr.querySelector(".stuck-flag");
      if (stuck && !flag) tr.cells[2].append(" ", el("span", { class: "stuck-flag" }, "stuck"));
      if (!stuck && flag) flag.remove();
      const since = parseFloat(tr.dataset.since);
      tr.querySelector(".since").textContent = isNaN(since) ? "" : age(now() - since);
      const seen = parseFloat(tr.dataset.seen);
      const seenCell = tr.querySelector(".seen");
      seenCell.firstChild.textContent = isNaN(seen) ? "never" : age(now() - seen) + " ago";
      tr.hidden = !visible(tr);
    }

    function refreshAll() {
      for (const tr of rack.querySelectorAll("tr[data-mac]")) refreshRow(tr);
      recount();
    }

    function recount() {
      let shown = 0;
      let stuck = 0;
      for (const tr of rack.querySelectorAll("tr[data-mac]")) {
        shown += tr.hidden ? 0 : 1;
        stuck += tr.classList.contains("stuck") ? 1 : 0;
      }
      $("shown").textContent = shown;
      $("count-stuck").textContent = stuck;
      for (const body of rack.querySelectorAll("tbody[data-group]")) {
        const rows = body.querySelectorAll("tr[data-mac]");
        body.hidden = rows.length === 0;
        const n = body.querySelector("tr.group .n");
        if (n) n.textContent = rows.length;
      }
    }

    function fill(tr, r) {
      const d = tr.dataset;
      d.mac = r.mac; d.name = r.name; d.state = r.state; d.boot = r.boot;
      d.since = r.state_since === null ? "" : r.state_since;
      d.seen = r.last_seen === null ? "" : r.last_seen;
      d.bmc = r.bmc; d.address = r.address;
      tr.replaceChildren();
      const head = el("th", { scope: "row", "data-label": "Machine" });
      head.append(el("a", { href: "/machines/" + r.mac }, r.name || r.mac));
      const state = el("td", { "data-label": "State" });
      state.append(el("span", { class: "badge state-" + r.state }, r.state));
      const seen = el("td", { "data-label": "Last seen", class: "seen" });
      seen.append(document.createTextNode(""));
      if (r.last_endpoint) seen.append(" ", el("span", { class: "note" }, "(" + r.last_endpoint + ")"));
      tr.append(
        head,
        el("td", { "data-label": "MAC", class: "mono" }, r.mac),
        state,
        el("td", { "data-label": "In state", class: "since" }, ""),
        el("td", { "data-label": "Boot" }, r.boot),
        el("td", { "data-label": "Power" }, r.power || "—"),
        el("td", { "data-label": "Address", class: "mono" }, r.address || "—"),
        el("td", { "data-label": "BMC", class: "mono" }, r.bmc || "—"),
        seen,
      );
    }

    const key = (d) => [d.name || "~", d.mac];
    const before = (a, b) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);

    function place(tr) {
      const group = grouping === "state" ? tr.dataset.state : grouping === "boot" ? tr.dataset.boot : "all";
      const body = rack.querySelector('tbody[data-group="' + group + '"]');
      if (!body) return;
      const mine = key(tr.dataset);
      let next = null;
      for (const other of body.querySelectorAll("tr[data-mac]")) {
        if (other !== tr && before(mine, key(other.dataset))) { next = other; break; }
      }
      if (tr.parentNode !== body || tr.nextElementSibling !== next) body.insertBefore(tr, next);
    }

    // What the row shows, apart from times (those tick in place): a row whose view is
    // unchanged only gets its new times, without rebuilding or moving it.
    const view = (r) => [r.name, r.state, r.boot, r.power, r.address, r.bmc, r.last_endpoint].join("\u0000");
    let pending = new Map();
    let removedPending = [];
    let counts = null;

    function flush() {
      const rows = pending;
      const removed = removedPending;
      pending = new Map();
      removedPending = [];
      for (const r of rows.values()) {
        let tr = $("m-" + r.mac);
        const seen = r.last_seen === null ? "" : String(r.last_seen);
        const since = r.state_since === null ? "" : String(r.state_since);
        if (tr && tr.dataset.view === view(r)) {
          tr.dataset.seen = seen;
          tr.dataset.since = since;
          refreshRow(tr);
          continue;
        }
        const moved = !tr || tr.dataset.name !== r.name || tr.dataset.state !== r.state || tr.dataset.boot !== r.boot;
        if (!tr) tr = el("tr", { id: "m-" + r.mac });
        fill(tr, r);
        tr.dataset.view = view(r);
        if (moved) place(tr);
        refreshRow(tr);
        document.dispatchEvent(new CustomEvent("kpc:row", { detail: { mac: r.mac, state: r.state } }));
      }
      for (const mac of removed) { const tr = $("m-" + mac); if (tr) tr.remove(); }
      if (counts) {
        for (const [name, n] of Object.entries(counts)) {
          const c = $("count-" + name);
          if (c && name !== "stuck") c.textContent = n;
        }
        $("total").textContent = counts.total + " machines";
      }
      recount();
      const t = Date.now();
      if (t - lastAnnounce > 5000) {  // a screen reader hears at most one update in 5 s
        lastAnnounce = t;
        live.textContent = "Live; updated " + new Date().toLocaleTimeString() + ".";
      }
    }

    // Messages that arrive together are merged and applied in one DOM pass (the server
    // sends at most one message per poll, so this is at most ~10 passes a second).
    function apply(msg) {
      const first = pending.size === 0 && removedPending.length === 0;
      for (const r of msg.rows) pending.set(r.mac, r);
      for (const mac of msg.removed) { pending.delete(mac); removedPending.push(mac); }
      counts = msg.counts;
      if (first) setTimeout(flush, 0);
    }

    function connect() {
      const source = new EventSource("/events?since=" + rack.dataset.cursor);
      source.onopen = () => { live.textContent = "Live."; rack.dataset.live = "yes"; };
      source.onmessage = (e) => {
        rack.dataset.cursor = e.lastEventId || rack.dataset.cursor;
        apply(JSON.parse(e.data));
      };
      source.onerror = () => {
        rack.dataset.live = "no";
        if (source.readyState === EventSource.CLOSED) {
          live.textContent = "Live updates stopped (signed out?). Reload the page.";
        } else {
          live.textContent = "Connection lost; reconnecting…";
        }
      };
    }

    const form = $("filters");
    form.addEventListener("submit", (e) => {
      if ($("group").value !== grouping) return;  // regrouping reloads the page
      e.preventDefault();
      sync();
    });
    function sync() {
      const params = new URLSearchParams({ q: q.value, state: stateSel.value, group: grouping });
      history.replaceState(null, "", "?" + params.toString());
      for (const a of rack.querySelectorAll(".counts a")) {
        if (a.dataset.state === stateSel.value) a.setAttribute("aria-current", "true");
        else a.removeAttribute("aria-current");
      }
      refreshAll();
    }
    q.addEventListener("input", sync);
    stateSel.addEventListener("change", sync);
    $("group").addEventListener("change", () => form.requestSubmit());
    for (const a of rack.querySelectorAll(".counts a")) {
      a.addEventListener("click", (e) => { e.preventDefault(); stateSel.value = a.dataset.state; sync(); });
    }
    setInterval(refreshAll, 5000);
    connect();
  }

  function poll(url, every, update) {
    const tick = () => fetch(url, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then((data) => { if (data) update(data); })
      .catch(() => {})
      .finally(() => setTimeout(tick, every));
    setTimeout(tick, every);
  }

  function showTail(pre, lines) {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = lines.join("\n");
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  const rack = $("rack");
  if (rack) liveRack(rack);
  const consolePre = $("console");
  if (consolePre) poll(consolePre.dataset.src, 2000, (d) => showTail(consolePre, d.lines));
  const run = $("run");
  if (run) {
    poll(run.dataset.src, 1500, (d) => {
      $("run-status").textContent = d.status;
      $("run-task").textContent = d.task || "—";
      const list = $("run-failures");
      list.replaceChildren(...(d.failures.length ? d.failures.map((f) => {
        const li = el("li");
        li.append(el("strong", {}, f.host), ": " + f.task + " — " + f.message);
        return li;
      }) : [el("li", { class: "none" }, "none")]));
      showTail($("run-log"), d.lines);
    });
  }
  for (const pre of document.querySelectorAll("pre.console")) pre.scrollTop = pre.scrollHeight;
})();
