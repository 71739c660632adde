/* IOC big screen: indicators from GET /api/v1/ioc/summary, the one map, ECharts trends, live feed (SSE). */
(function () {
  "use strict";
  var CB = window.CB, pick = CB.pick;
  var textColor = "#b9cdf0", lineColor = "#1d4a86";
  var charts = {};
  var ready = {summary: false, map: false};

  function markReady(part) {
    ready[part] = true;
    if (ready.summary && ready.map && !document.body.dataset.ready) {
      document.body.dataset.ready = "1";
      window.CB_IOC_READY_AT = performance.now();
    }
  }

  function tick() {
    var d = new Date();
    document.getElementById("clock").textContent = d.toLocaleString(CB.lang === "en" ? "en-GB" : "zh-CN", {hour12: false});
  }
  tick();
  setInterval(tick, 1000);

  function setKpi(id, value, text, opts) {
    var box = document.getElementById("kpi-" + id);
    if (!box) return;
    var v = box.querySelector(".v");
    box.classList.toggle("nc", value === null);
    box.classList.toggle("bad", !!(opts && opts.bad));
    if (value === null) {
      v.textContent = CB.tr("common.not_connected");
      v.dataset.value = "";
      box.dataset.connected = "false";
      return;
    }
    box.dataset.connected = "true";
    v.dataset.value = value === undefined ? "" : String(value);
    v.textContent = text !== undefined ? text : CB.num(value);
  }

  function chart(id) {
    if (!window.echarts) return null;
    if (!charts[id]) charts[id] = echarts.init(document.getElementById(id), null, {renderer: "canvas"});
    return charts[id];
  }
  var axisStyle = {axisLine: {lineStyle: {color: lineColor}}, axisLabel: {color: textColor}, splitLine: {lineStyle: {color: "#12325c"}}};

  function renderCases(c) {
    if (!c || !c.connected) {
      ["cases_today", "cases_open", "cases_overdue", "closure_rate", "ontime_rate", "satisfaction"].forEach(function (k) { setKpi(k, null); });
      ["rank-dept", "rank-town"].forEach(function (id) {
        document.querySelector("#" + id + " tbody").innerHTML = "";
        document.querySelector("#" + id + " tbody").appendChild(CB.el("tr", null, CB.el("td", {class: "nc-tag"}, CB.tr("common.not_connected"))));
      });
      return;
    }
    setKpi("cases_today", pick(c, "cases_today", "today"));
    setKpi("cases_open", pick(c, "cases_open", "open"));
    var overdue = pick(c, "cases_overdue", "overdue");
    setKpi("cases_overdue", overdue, undefined, {bad: overdue > 0});
    var rates = [["closure_rate", pick(c, "closure_rate", "close_rate")], ["ontime_rate", pick(c, "ontime_rate", "on_time_rate")],
      ["satisfaction", pick(c, "satisfaction", "satisfaction_rate")]];
    rates.forEach(function (r) { setKpi(r[0], r[1] === undefined ? "" : r[1], CB.pct(r[1])); });

    var trend = (pick(c, "trend_30d", "trend") || []).slice(-14);
    var ch = chart("chart-trend");
    if (ch) {
      ch.setOption({
        grid: {left: 36, right: 10, top: 28, bottom: 24},
        legend: {textStyle: {color: textColor}, top: 0},
        tooltip: {trigger: "axis"},
        xAxis: Object.assign({type: "category", data: trend.map(function (d) { return String(pick(d, "date", "day") || "").slice(5, 10); })}, axisStyle),
        yAxis: Object.assign({type: "value", minInterval: 1}, axisStyle),
        series: [
          {name: CB.tr("ioc.reported"), type: "line", smooth: true, areaStyle: {opacity: .15}, data: trend.map(function (d) { return pick(d, "reported", "created", "count") || 0; })},
          {name: CB.tr("ioc.closed"), type: "line", smooth: true, data: trend.map(function (d) { return pick(d, "closed") || 0; })}
        ]
      });
    }
    var bySource = c.by_source || {};
    var cc = chart("chart-cat");
    if (cc) {
      cc.setOption({
        tooltip: {trigger: "item"},
        series: [{type: "pie", radius: ["40%", "70%"], label: {color: textColor, fontSize: 11},
          data: Object.keys(bySource).map(function (k) { return {name: CB.tr("source." + k, k), value: bySource[k]}; })}]
      });
    }
    rankTable("rank-dept", pick(c, "dept_ranking", "rank_dept") || []);
    rankTable("rank-town", pick(c, "town_ranking", "rank_town") || []);
  }

  function rankTable(id, rows) {
    var tb = document.querySelector("#" + id + " tbody");
    tb.innerHTML = "";
    if (!rows.length) { tb.appendChild(CB.el("tr", null, CB.el("td", {class: "nc-tag"}, CB.tr("common.none")))); return; }
    rows.slice(0, 6).forEach(function (r, i) {
      var score = r.score !== undefined ? r.score : pick(r, "closure_rate", "ontime_rate");
      tb.appendChild(CB.el("tr", null,
        CB.el("td", null, String(i + 1)),
        CB.el("td", null, CB.name(r) || CB.name(r, "org_name") || r.org_code || ""),
        CB.el("td", {class: "n"}, CB.num(pick(r, "cases", "count", "total"))),
        CB.el("td", {class: "n"}, score === undefined || score === null ? "—" : (score <= 1 ? CB.pct(score) : Number(score).toFixed(1)))));
    });
  }

  function renderIot(i, d) {
    if (!i || !i.connected) {
      setKpi("devices_online", null);
      setKpi("alarms", null);
    } else {
      var rate = pick(i, "online_rate", "devices_online_rate");
      if (rate === undefined && i.devices_total) rate = (i.devices_online || 0) / i.devices_total;
      setKpi("devices_online", rate === undefined ? "" : rate, CB.pct(rate));
      var sev = pick(i, "alarms_active_by_severity", "alarms_by_severity") || {};
      var act = pick(i, "alarms_active", "active_alarms");
      if (act === undefined) act = Object.keys(sev).reduce(function (n, k) { return n + (Number(sev[k]) || 0); }, 0);
      setKpi("alarms", act, undefined, {bad: act > 0});
      var ch = chart("chart-alarms");
      if (ch) {
        var levels = [1, 2, 3, 4];
        ch.setOption({
          grid: {left: 60, right: 16, top: 6, bottom: 18},
          xAxis: Object.assign({type: "value", minInterval: 1}, axisStyle),
          yAxis: Object.assign({type: "category", data: levels.map(CB.sevName)}, axisStyle),
          series: [{type: "bar", data: levels.map(function (l) {
            var v = Array.isArray(sev) ? (sev.filter(function (x) { return x.severity === l; })[0] || {}).count : sev[l];
            return {value: v || 0, itemStyle: {color: CB.sevColor[l]}};
          })}]
        });
      }
    }
    if (!d || !d.connected) setKpi("exchange", null);
    else setKpi("exchange", pick(d, "exchanged_today", "exchange_today", "records_today", "today"));
  }

  var loading = false;
  function loadSummary() {
    if (loading) return;
    loading = true;
    CB.api("GET", "/api/v1/ioc/summary").then(function (s) {
      renderCases(s.cases);
      renderIot(s.iot, s.data);
      document.getElementById("ioc-updated").textContent = CB.fmtTime(s.generated_at);
      markReady("summary");
    }).catch(CB.fail).then(function () { loading = false; });
  }

  // ---- map
  var map = CB.map("ioc-map", {zoom: 12});
  var pending = {district: 1, towns: 1, devices: 1, cases: 1, alarms: 1, hotspots: 1};
  var counts = {};
  // With more devices or open cases in view than the page draws, the server answers counted cells (clusters).
  var layers = CB.standardLayers(map, {dark: true, hotspots: true, onchange: function (name, st) {
    counts[name] = st.connected === false ? null : st.count;
    delete pending[name];
    if (!Object.keys(pending).length) markReady("map");
    legend();
  }});
  function legend() {
    var box = document.getElementById("ioc-legend");
    box.innerHTML = "";
    [["cases", "#3f8efc"], ["alarms", "#d7263d"], ["devices", "#2a9d8f"], ["hotspots", "#ff4d4f"]].forEach(function (x) {
      var n = counts[x[0]];
      var label = n === null ? CB.tr("common.not_connected") : (n === undefined ? "…" : n);
      box.appendChild(CB.el("span", {"data-layer": x[0], "data-count": n === null || n === undefined ? "" : String(n)},
        CB.el("i", {style: "background:" + x[1]}), CB.tr("map." + x[0]) + " " + label));
    });
  }

  // ---- live feed
  var feed = document.getElementById("feed");
  var refreshTimer = null, againTimer = null;
  function refreshSoon(which) {
    function run() {
      loadSummary();
      which.forEach(function (n) { if (layers[n]) layers[n].reload(); });
    }
    clearTimeout(refreshTimer);
    clearTimeout(againTimer);
    refreshTimer = setTimeout(run, 1000);
    againTimer = setTimeout(run, 6000);  // once more, for changes still being counted
  }
  function addFeed(topic, p) {
    var text;
    if (topic.indexOf("iot.alarm") === 0) {
      text = "⚠ " + ((CB.lang === "en" ? p.message_en : p.message_zh) || p.rule_name || p.device_code || "") +
        (p.severity ? " · " + CB.sevName(p.severity) : "") +
        (topic.endsWith("raised") ? "" : " · " + CB.status(topic.split(".").pop()));
    } else if (topic.indexOf("cases.case") === 0) {
      text = "▣ " + (p.ticket || "") + " " + (p.category_name || p.category_code || "") + " → " + CB.status(p.to_status || "reported");
    } else if (topic === "cases.hotspot.flagged") {
      text = "◎ " + CB.tr("map.hotspots") + " · " + (p.category_name || p.category_code || "") + " × " + (p.count || "") +
        (p.grid_code ? " · " + p.grid_code : "");
    } else if (topic === "iot.device.status") {
      text = "◉ " + (p.device_code || "") + " " + CB.status(p.status);
    } else {
      return;
    }
    var li = CB.el("li", {"data-topic": topic}, CB.el("time", null, CB.fmtTime(p.at || new Date().toISOString()).slice(11)), text);
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > 60) feed.removeChild(feed.lastChild);
  }
  var liveState = document.getElementById("live-state");
  CB.live(function (topic, payload) {
    addFeed(topic, payload);
    if (topic.indexOf("cases.") === 0) refreshSoon(["cases", "hotspots"]);
    else if (topic.indexOf("iot.alarm") === 0) refreshSoon(["alarms"]);
    else if (topic === "iot.device.status") refreshSoon(["devices"]);
  }, function (ok) {
    liveState.textContent = ok ? "● LIVE" : CB.tr("ioc.live.off");
    liveState.dataset.live = ok ? "1" : "0";
  });

  loadSummary();
  setInterval(function () { loadSummary(); ["cases", "alarms", "devices", "hotspots"].forEach(function (n) { layers[n].reload(); }); }, 30000);
  window.addEventListener("resize", function () { Object.keys(charts).forEach(function (k) { charts[k].resize(); }); });
  window.CB_IOC = {reload: function () { loadSummary(); ["cases", "alarms", "devices"].forEach(function (n) { layers[n].reload(); }); }, layers: layers};
})();
