/* Customify pages: what the event stream changes on screen. Loaded after htmx, before its SSE extension.
   One GET /api/v1/events per tab (htmx's SSE extension holds it; the browser resumes it with Last-Event-ID,
   and a fresh connection asks from the last id seen with ?last_event_id=). Events are JSON: they are
   never put into the page as HTML; cards and panels are fetched as server-rendered (escaped) HTML. */
(function () {
  "use strict";
  var events = document.getElementById("events");
  if (!events || !window.htmx) { return; }
  var lastId = events.getAttribute("data-last-event-id") || "";
  var lastData = Date.now();
  var offlineSince = null;

  htmx.createEventSource = function (url) {
    var full = lastId ? url + (url.indexOf("?") < 0 ? "?" : "&") + "last_event_id=" + encodeURIComponent(lastId) : url;
    return new EventSource(full);
  };

  function $(id) { return document.getElementById(id); }

  function setLive(state, text) {
    var live = $("live");
    if (!live) { return; }
    live.className = "live " + state;
    live.textContent = text;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) { return "–"; }
    if (seconds < 10) { return seconds.toFixed(1) + " s"; }
    if (seconds < 60) { return Math.round(seconds) + " s"; }
    if (seconds < 3600) { return Math.round(seconds / 60) + " min"; }
    return (seconds / 3600).toFixed(1) + " h";
  }

  function ms(value) {
    if (value === null || value === undefined) { return "–"; }
    return value >= 10 ? Math.round(value) + " ms" : value.toFixed(1) + " ms";
  }

  /* Offline: say so, grey the last data and show its age; back online: undo. */
  function offline() {
    if (offlineSince === null) {
      offlineSince = Date.now();
      document.body.classList.add("stale");
      $("offline-since").textContent = new Date(lastData).toLocaleTimeString();
      $("offline-banner").hidden = false;
      setLive("down", "unreachable");
    }
    $("offline-age").textContent = age((Date.now() - lastData) / 1000);
  }

  function online() {
    lastData = Date.now();
    if (offlineSince !== null) {
      offlineSince = null;
      document.body.classList.remove("stale");
      $("offline-banner").hidden = true;
    }
    setLive("up", "live");
  }

  setInterval(function () { if (offlineSince !== null) { offline(); } }, 1000);

  /* A fragment fetched from the server, one request per target at a time (later events coalesce). */
  var inflight = {};
  function refresh(key, url, target, apply) {
    if (inflight[key]) { inflight[key] = 2; return; }
    inflight[key] = 1;
    fetch(url, { headers: { "HX-Request": "true", "HX-Target": target }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        var again = inflight[key] === 2;
        delete inflight[key];
        if (html !== null) { apply(html); }
        if (again) { refresh(key, url, target, apply); }
      })
      .catch(function () { delete inflight[key]; });
  }

  function filters() {
    var status = $("status"), q = $("q");
    return "?status=" + encodeURIComponent(status ? status.value : "") + "&q=" + encodeURIComponent(q ? q.value.trim() : "");
  }

  var STATUSES = ["draft", "rendering", "published", "failed"];

  /* The badge changes at once from the event (a known status word only); the card's HTML follows. */
  function badge(id, status) {
    var existing = $("d-" + id);
    if (!existing || STATUSES.indexOf(status) < 0) { return; }
    var label = existing.querySelector(".badge");
    if (label) {
      label.className = "badge s-" + status;
      label.lastChild.textContent = status;
    }
    existing.setAttribute("data-status", status);
  }

  function card(id, created) {
    var existing = $("d-" + id);
    var grid = $("cards");
    var mayAdd = created && grid && !/[?&]cursor=/.test(location.search); // new designs go first
    if (!existing && !mayAdd) {
      var recent = $("recent");
      if (!(created && recent)) { return; }
      grid = recent;
    }
    refresh("card-" + id, "/designs/" + encodeURIComponent(id) + "/card" + filters(), "d-" + id, function (html) {
      var current = $("d-" + id);
      if (current) {
        if (html.trim()) { current.outerHTML = html; } else { current.remove(); }
      } else if (html.trim() && grid) {
        var empty = grid.querySelector(".empty");
        if (empty) { empty.remove(); }
        grid.insertAdjacentHTML("afterbegin", html);
      }
    });
  }

  function panel(id) {
    var el = $("panel");
    if (!el || el.getAttribute("data-design") !== id) { return; }
    refresh("panel", "/designs/" + encodeURIComponent(id), "panel", function (html) {
      el.innerHTML = html;
      htmx.process(el);
    });
  }

  function paused(value) {
    var banner = $("paused-banner");
    if (banner) { banner.hidden = !value; }
    var state = $("consume-state");
    if (state) { state.textContent = value ? "paused" : "consuming"; }
  }

  function health(healthy, problems, status) {
    var badge = $("health");
    if (badge) {
      var word = status === "degraded" ? "degraded" : (healthy ? "healthy" : "failing");
      badge.className = "badge " + { healthy: "ok", degraded: "warn", failing: "bad" }[word];
      badge.lastChild.textContent = word;
    }
    var list = $("problems");
    if (list && problems) {
      list.textContent = "";
      if (!problems.length) {
        var none = document.createElement("li");
        none.className = "none";
        none.textContent = "None: workers are consuming.";
        list.appendChild(none);
      }
      problems.forEach(function (p) {
        var li = document.createElement("li");
        li.textContent = typeof p === "string" ? p : p.detail + (p.fix ? " — fix: " + p.fix : "");
        list.appendChild(li);
      });
    }
  }

  function cell(row, text, cls) {
    var td = document.createElement("td");
    if (cls) {
      var span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
    return td;
  }

  function queue(q) {
    document.querySelectorAll("[data-q]").forEach(function (el) {
      var value = q[el.getAttribute("data-q")];
      el.textContent = el.getAttribute("data-fmt") === "age" ? age(value) : (value === null || value === undefined ? "–" : value);
    });
    paused(q.paused);
    health(q.healthy, q.problems, q.status);
    var spark = $("spark");
    if (spark && q.throughput) {
      var top = Math.max.apply(null, q.throughput.concat([1]));
      var step = 240 / Math.max(q.throughput.length - 1, 1);
      spark.setAttribute("points", q.throughput.map(function (v, i) {
        return (i * step).toFixed(1) + "," + (38 - (v / top) * 36).toFixed(1);
      }).join(" "));
    }
    var timings = $("timings");
    if (timings && q.windows) {
      timings.textContent = "";
      ["1m", "1h"].forEach(function (w) {
        Object.keys(q.windows[w] || {}).forEach(function (task) {
          var s = q.windows[w][task], row = document.createElement("tr");
          [task, w, s.done, s.failed, ms(s.wait_p50_ms), ms(s.wait_p95_ms), ms(s.wait_p99_ms), ms(s.run_p50_ms),
            ms(s.run_p95_ms), ms(s.run_p99_ms)].forEach(function (v) { cell(row, String(v)); });
          timings.appendChild(row);
        });
      });
      if (!timings.children.length) {
        var none = document.createElement("tr");
        cell(none, "No task has finished in the last hour.").colSpan = 10;
        timings.appendChild(none);
      }
    }
    var threads = $("threads");
    if (threads && q.threads) {
      threads.textContent = "";
      q.threads.forEach(function (t) {
        var row = document.createElement("tr");
        row.className = "t-" + t.state;
        cell(row, t.name);
        cell(row, t.state, "badge w-" + t.state);
        cell(row, t.task || "–");
        var design = cell(row, t.design_id ? "" : "–");
        if (t.design_id) {
          var a = document.createElement("a");
          a.href = "/designs/" + encodeURIComponent(t.design_id);
          a.textContent = t.design_id.slice(0, 8);
          design.appendChild(a);
        }
        cell(row, age(t.busy_for_s));
        cell(row, age(t.heartbeat_age_s));
        cell(row, age(t.progress_age_s));
        threads.appendChild(row);
      });
    }
  }

  var sink = $("sse-sink");
  sink.addEventListener("htmx:sseBeforeMessage", function (e) {
    e.preventDefault(); // JSON: never swapped into the page
    var message = e.detail;
    if (message.lastEventId) { lastId = message.lastEventId; }
    online();
    var data;
    try { data = JSON.parse(message.data); } catch (err) { return; }
    switch (message.type) {
      case "hello":
        if (data.missed) { location.reload(); } // the server's buffer no longer holds what we missed
        break;
      case "design.status":
        badge(data.design_id, data.status);
        card(data.design_id, false);
        panel(data.design_id);
        break;
      case "task.enqueued":
        if (data.design_id) { card(data.design_id, true); panel(data.design_id); }
        break;
      case "task.started": case "task.succeeded": case "task.failed": case "task.retried":
        if (data.design_id) { panel(data.design_id); }
        break;
      case "design.deleted":
        var gone = $("d-" + data.design_id);
        if (gone) { gone.remove(); }
        break;
      case "queue":
        queue(data);
        break;
      case "control":
        if (data.paused !== undefined) { paused(data.paused); }
        break;
      case "system.problems":
        health(data.healthy, data.problems, data.status);
        break;
      case "server.closing":
        offline();
        break;
    }
  });

  document.body.addEventListener("htmx:sseOpen", function () { online(); });
  document.body.addEventListener("htmx:sseError", function () { offline(); });

  /* The create form's preview as you type: GET /api/v1/previews?spec=<base64url JSON> (nothing stored). The
     layers are those the form's submit makes (customify/web/pages.py PageController.create). */
  var instant = $("live-preview"), createForm = document.querySelector("form.create");
  if (instant && createForm) {
    var typing = null;
    var drawPreview = function () {
      var f = createForm.elements, layers = [];
      [["text1", 0.25, 0.12, "bold"], ["text2", 0.8, 0.07, "regular"]].forEach(function (t) {
        var text = f[t[0]].value.trim();
        if (text) {
          layers.push({ type: "text", text: text, font: f.font.value, weight: t[3], size: t[2],
                        color: f.text_color.value, x: 0.5, y: t[1] });
        }
      });
      var spec = { name: f.name.value.trim() || "preview", product: f.product.value, color: f.color.value, layers: layers };
      var json = JSON.stringify(spec);
      var bytes = new TextEncoder().encode(json), binary = "";
      bytes.forEach(function (b) { binary += String.fromCharCode(b); });
      var encoded = btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      instant.src = "/api/v1/previews?size=480&spec=" + encoded;
    };
    createForm.addEventListener("input", function () { clearTimeout(typing); typing = setTimeout(drawPreview, 250); });
    createForm.addEventListener("change", function () { clearTimeout(typing); typing = setTimeout(drawPreview, 50); });
    drawPreview();
  }

  /* The create form: the colours offered follow the product. */
  var product = $("product"), color = $("color");
  if (product && color) {
    product.addEventListener("change", function () {
      var colors = (product.selectedOptions[0].getAttribute("data-colors") || "").split(",");
      color.textContent = "";
      colors.forEach(function (c) {
        var option = document.createElement("option");
        option.value = c;
        option.textContent = c;
        color.appendChild(option);
      });
      var coloured = colors.filter(function (c) { return c !== "#ffffff"; })[0]; // as the server's default
      if (coloured) { color.value = coloured; }
    });
  }
}());
