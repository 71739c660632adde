/* CityBrain page helpers: API calls, texts, toasts, map setup, live feed. No build step, no framework. */
(function () {
  "use strict";
  // the page's settings come as a JSON data block (no inline script, so the CSP can forbid them)
  var cfg = document.getElementById("cb-config");
  var CB = window.CB = Object.assign(window.CB || {lang: "zh-CN", t: {}}, cfg ? JSON.parse(cfg.textContent) : {});

  CB.tr = function (key, fallback) {
    var v = CB.t[key];
    return v === undefined ? (fallback === undefined ? key : fallback) : v;
  };
  CB.status = function (code) {
    return code ? CB.tr("status." + code, code) : "";
  };
  CB.can = function (perm) {
    return (CB.user.perms || []).indexOf(perm) >= 0;
  };

  /* fetch JSON; errors raise an Error whose message is the problem document's detail in the page language */
  CB.api = function (method, url, opts) {
    opts = opts || {};
    var init = {method: method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (opts.query) {
      var q = new URLSearchParams();
      Object.keys(opts.query).forEach(function (k) {
        var v = opts.query[k];
        if (v !== undefined && v !== null && v !== "") q.append(k, v);
      });
      var qs = q.toString();
      if (qs) url += (url.indexOf("?") >= 0 ? "&" : "?") + qs;
    }
    if (opts.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.json);
    } else if (opts.form !== undefined) {
      init.body = opts.form; // FormData or URLSearchParams
    }
    return fetch(url, init).then(function (r) {
      if (r.status === 204) return null;
      var ct = r.headers.get("content-type") || "";
      var body = ct.indexOf("json") >= 0 ? r.json() : r.text();
      return body.then(function (data) {
        if (r.ok) return data;
        if (r.status === 401 && !opts.noRedirect) {
          location.href = "/login?next=" + encodeURIComponent(location.pathname);
        }
        var msg = (data && (data.detail || data.title)) || (r.status + " " + r.statusText);
        if (data && data.errors && data.errors.length) {
          msg += "：" + data.errors.map(function (e) { return (e.field ? e.field + " " : "") + e.message; }).join("；");
        }
        var err = new Error(msg);
        err.status = r.status;
        err.problem = data;
        throw err;
      });
    });
  };

  CB.toast = function (msg, kind) {
    var box = document.getElementById("toast");
    if (!box) return;
    var div = document.createElement("div");
    div.className = "toast " + (kind || "ok");
    div.textContent = msg;
    box.appendChild(div);
    setTimeout(function () { div.remove(); }, kind === "err" ? 8000 : 4000);
  };
  CB.fail = function (err) {
    CB.toast(CB.tr("common.error") + "：" + (err && err.message ? err.message : err), "err");
  };

  /* element builder: CB.el("td", {class: "x"}, "text", child) */
  CB.el = function (tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) return;
        if (k === "text") e.textContent = v;
        else if (k.indexOf("on") === 0 && typeof v === "function") e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : v);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === undefined || c === null || c === false) continue;
      if (Array.isArray(c)) c.forEach(function (x) { if (x) e.appendChild(typeof x === "string" ? document.createTextNode(x) : x); });
      else e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  };

  CB.fmtTime = function (iso) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d)) return String(iso);
    var p = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes());
  };
  CB.pct = function (v) {
    if (v === null || v === undefined || isNaN(v)) return "—";
    return (v <= 1 ? v * 100 : v).toFixed(1) + "%";
  };
  CB.num = function (v) {
    if (v === null || v === undefined || isNaN(v)) return "—";
    return Number(v).toLocaleString(CB.lang === "en" ? "en-US" : "zh-CN");
  };
  /* first defined of several field names: APIs name things slightly differently */
  CB.pick = function (obj) {
    if (!obj) return undefined;
    for (var i = 1; i < arguments.length; i++) {
      var v = obj[arguments[i]];
      if (v !== undefined && v !== null) return v;
    }
    return undefined;
  };
  CB.name = function (obj, base) {
    if (!obj) return "";
    base = base || "name";
    return (CB.lang === "en" && obj[base + "_en"]) || obj[base] || obj[base + "_zh"] || obj.code || "";
  };
  CB.items = function (data) {
    if (!data) return [];
    if (Array.isArray(data)) return data;
    return data.items || data.features || data.rows || data.results || [];
  };

  /* alarm severity 1 一般 … 4 特别严重 (docs/iot.md) in the national four colours: 特别严重 red, 严重 orange,
     较重 yellow, 一般 blue; sevInk is the text colour that reads on each */
  CB.sevColor = {1: "#1f6fd1", 2: "#f2c300", 3: "#f57c00", 4: "#d7263d"};
  CB.sevInk = {1: "#fff", 2: "#1a1a1a", 3: "#1a1a1a", 4: "#fff"};
  CB.sevName = function (level) { return CB.tr("sev." + level, String(level)); };
  CB.statusColor = {
    reported: "#7b61ff", filed: "#3f8efc", dispatched: "#e09b00", in_progress: "#f46036", rework: "#b5179e",
    handled: "#17a398", verified: "#2a9d8f", closed: "#6c757d", not_filed: "#6c757d", suspended: "#8d6e63", merged: "#6c757d",
    online: "#2a9d8f", offline: "#8d99ae", disabled: "#4a5568"
  };

  /* ---- map ---------------------------------------------------------------------------------------- */
  CB.map = function (elId, opts) {
    opts = opts || {};
    var map = L.map(elId, {center: opts.center || [22.78, 113.55], zoom: opts.zoom || 12, zoomSnap: 0.25,
      preferCanvas: true, zoomControl: true, attributionControl: !!CB.tileUrl});
    if (CB.tileUrl) {
      L.tileLayer(CB.tileUrl, {maxZoom: 19, attribution: ""}).addTo(map);
    } else {
      map.getContainer().classList.add("plain-map");
    }
    return map;
  };
  CB.bbox = function (map) {
    var b = map.getBounds();
    return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (x) { return x.toFixed(5); }).join(",");
  };
  /* A GeoJSON layer reloaded for the visible area; status shows "not connected" when its API is absent. */
  CB.geoLayer = function (map, opts) {
    var layer = L.geoJSON(null, opts.style || {});
    var seq = 0, timer = null;
    var state = {layer: layer, count: 0, connected: null, enabled: opts.enabled !== false};
    function load() {
      if (!state.enabled) return;
      var my = ++seq;
      var q = Object.assign({}, typeof opts.query === "function" ? opts.query() : (opts.query || {}));
      if (opts.bbox !== false) q.bbox = CB.bbox(map);
      CB.api("GET", opts.url, {query: q, noRedirect: true}).then(function (fc) {
        if (my !== seq) return;
        layer.clearLayers();
        var feats = CB.items(fc);
        if (opts.filter) feats = feats.filter(opts.filter);
        layer.addData({type: "FeatureCollection", features: feats});
        state.count = fc && fc.clustered ? fc.total : feats.length;  // clusters: the cases they stand for
        state.clustered = !!(fc && fc.clustered);
        state.connected = true;
        state.data = feats;
        if (opts.onload) opts.onload(state);
      }).catch(function (err) {
        if (my !== seq) return;
        layer.clearLayers();
        state.count = 0;
        state.connected = err.status === 404 ? false : null;
        state.error = err.message;
        if (opts.onload) opts.onload(state);
      });
    }
    state.reload = function () {
      clearTimeout(timer);
      timer = setTimeout(load, 150);
    };
    state.loadNow = function () { clearTimeout(timer); load(); };
    state.setEnabled = function (on) {
      state.enabled = on;
      if (on) { layer.addTo(map); state.reload(); } else { map.removeLayer(layer); }
    };
    if (opts.bbox !== false) map.on("moveend", state.reload);
    if (state.enabled) { layer.addTo(map); if (!opts.defer) load(); }  // defer: the owner calls reload() later
    return state;
  };
  CB.props = function (f) { return (f && f.properties) || {}; };
  CB.popupTable = function (props, keys) {
    var tb = CB.el("table", {class: "kv"});
    keys.forEach(function (k) {
      var v = props[k[0]];
      if (v === undefined || v === null || v === "") return;
      if (k[2]) v = k[2](v, props);
      tb.appendChild(CB.el("tr", null, CB.el("th", null, k[1]), CB.el("td", null, String(v))));
    });
    return tb;
  };

  /* ---- live feed (SSE) ---------------------------------------------------------------------------- */
  /* Server-Sent Events from GET /api/v1/live (falls back to the IoT stream where the core one is absent). */
  CB.live = function (onEvent, onState) {
    if (!window.EventSource) { if (onState) onState(false); return null; }
    var topics = ["iot.alarm.raised", "iot.alarm.acknowledged", "iot.alarm.cleared", "iot.device.status",
      "cases.case.created", "cases.case.transitioned", "cases.case.rated", "cases.hotspot.flagged"];
    var urls = ["/api/v1/live"];
    if (CB.can("iot.read")) urls.push("/api/v1/iot/stream");
    function handle(ev) {
      var data = {};
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      var topic = ev.type === "message" ? (data.topic || "") : ev.type;
      onEvent(topic, data.payload && data.topic ? data.payload : data);
    }
    function open(i) {
      var es = new EventSource(urls[i], {withCredentials: true});
      var opened = false;
      es.onmessage = handle;
      topics.forEach(function (tp) { es.addEventListener(tp, handle); });
      es.addEventListener("logout", function () { es.close(); location.href = "/login"; });
      es.onopen = function () { opened = true; if (onState) onState(true, urls[i]); };
      es.onerror = function () {
        if (es.readyState === 2) {  // refused (e.g. 404): try the next stream
          es.close();
          if (!opened && i + 1 < urls.length) { open(i + 1); return; }
        }
        if (onState) onState(false);
      };
      CB.liveSource = es;
    }
    open(0);
    return true;
  };

  /* ---- forms -------------------------------------------------------------------------------------- */
  var fieldSeq = 0;
  /* a labelled control: <div><label for=id>text</label><control id=id></div> */
  CB.field = function (labelText, control) {
    var id = control.id || ("f" + (++fieldSeq));
    control.id = id;
    return CB.el("div", null, CB.el("label", {for: id}, labelText), control);
  };
  CB.formJSON = function (form) {
    var out = {};
    new FormData(form).forEach(function (v, k) {
      if (v instanceof File) return;
      if (v !== "") out[k] = v;
    });
    return out;
  };
  CB.busy = function (form, on) {
    Array.prototype.forEach.call(form.querySelectorAll("button, input[type=submit]"), function (b) { b.disabled = on; });
  };
})();
