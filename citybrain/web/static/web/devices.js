/* Device console: list and map, a device's latest values and readings chart, alarms with acknowledge. */
(function () {
  "use strict";
  var CB = window.CB;
  var API = "/api/v1/iot";
  var listBox = document.getElementById("dev-list"), detail = document.getElementById("dev-detail");
  var filter = document.getElementById("dev-filter");
  var chart = null;

  var map = CB.map("dev-map", {zoom: 12});
  CB.geoLayer(map, {url: "/api/v1/geo/areas", bbox: false, query: {level: "town"},
    style: {style: {color: "#6a86b0", weight: 1, fillOpacity: .03}, interactive: false}});
  var devLayer = CB.geoLayer(map, {url: API + "/devices.geojson",
    query: function () { return {status: document.getElementById("d-status").value}; },
    style: {pointToLayer: function (f, ll) {
      return L.circleMarker(ll, {radius: 5, color: "#fff", weight: 1, fillOpacity: .9,
        fillColor: CB.props(f).alarm_severity ? CB.sevColor[CB.props(f).alarm_severity] : (CB.statusColor[CB.props(f).status] || "#888")});
    }, onEachFeature: function (f, l) { l.on("click", function () { open(CB.props(f).code); }); }}});

  function loadList() {
    var v = CB.formJSON(filter);
    CB.api("GET", API + "/devices", {query: {q: v.q, status: v.status, limit: 100}}).then(function (data) {
      var items = CB.items(data);
      listBox.innerHTML = "";
      listBox.appendChild(CB.el("p", {class: "muted"}, CB.tr("map.count") + "：" + CB.num(data.total !== undefined ? data.total : items.length)));
      if (!items.length) { listBox.appendChild(CB.el("p", {class: "empty"}, CB.tr("common.none"))); return; }
      var tb = CB.el("tbody");
      items.forEach(function (d) {
        var tr = CB.el("tr", {tabindex: "0", "data-code": d.code},
          CB.el("td", null, d.code), CB.el("td", null, d.name || ""),
          CB.el("td", null, CB.lang === "en" ? (d.model_name_en || d.model_name) : d.model_name),
          CB.el("td", null, CB.el("span", {class: "badge", style: "background:" + (CB.statusColor[d.status] || "#888")}, CB.status(d.status))),
          CB.el("td", null, CB.fmtTime(d.last_seen_at)));
        tr.addEventListener("click", function () { open(d.code); });
        tr.addEventListener("keydown", function (ev) { if (ev.key === "Enter") open(d.code); });
        tb.appendChild(tr);
      });
      listBox.appendChild(CB.el("table", {class: "list"}, CB.el("thead", null, CB.el("tr", null,
        CB.el("th", {scope: "col"}, CB.tr("dev.code")), CB.el("th", {scope: "col"}, CB.tr("dev.name")),
        CB.el("th", {scope: "col"}, CB.tr("dev.type")), CB.el("th", {scope: "col"}, CB.tr("common.status")),
        CB.el("th", {scope: "col"}, CB.tr("common.time")))), tb));
    }).catch(CB.fail);
  }
  filter.addEventListener("submit", function (ev) { ev.preventDefault(); loadList(); devLayer.reload(); });

  function drawReadings(code, prop, unit) {
    var box = document.getElementById("dev-chart");
    if (!box || !window.echarts) return;
    CB.api("GET", API + "/devices/" + encodeURIComponent(code) + "/readings", {query: {property: prop, limit: 2000}}).then(function (r) {
      var pts = r.points || [];
      if (chart) chart.dispose();
      chart = echarts.init(box);
      chart.setOption({
        grid: {left: 48, right: 12, top: 20, bottom: 30}, tooltip: {trigger: "axis"},
        xAxis: {type: "time"}, yAxis: {type: "value", name: unit || "", scale: true},
        series: [{type: "line", showSymbol: false, data: pts.map(function (p) { return [p.ts, p.value !== undefined ? p.value : p.avg]; })}]
      });
      box.dataset.points = String(pts.length);
    }).catch(CB.fail);
  }

  function open(code) {
    detail.innerHTML = "";
    detail.appendChild(CB.el("p", {class: "muted"}, CB.tr("common.loading")));
    Promise.all([
      CB.api("GET", API + "/devices/" + encodeURIComponent(code)),
      CB.api("GET", API + "/devices/" + encodeURIComponent(code) + "/latest").catch(function () { return {values: {}}; }),
      CB.api("GET", API + "/alarms", {query: {device_code: code, status: "open", limit: 20}}).catch(function () { return {items: []}; })
    ]).then(function (res) {
      var d = res[0], latest = res[1].values || {}, alarms = CB.items(res[2]);
      detail.innerHTML = "";
      detail.dataset.code = d.code;
      detail.appendChild(CB.el("h2", null, d.name || d.code, " ",
        CB.el("span", {class: "badge", style: "background:" + (CB.statusColor[d.status] || "#888")}, CB.status(d.status))));
      detail.appendChild(CB.popupTable(d, [["code", CB.tr("dev.code")], ["model_name", CB.tr("dev.type")],
        ["address", CB.tr("case.address")], ["grid_code", CB.tr("case.grid")], ["last_seen_at", CB.tr("common.time"), CB.fmtTime]]));
      var props = Object.keys(latest);
      if (props.length) {
        detail.appendChild(CB.el("h3", null, CB.tr("dev.readings")));
        var tb = CB.el("tbody");
        props.forEach(function (k) {
          var v = latest[k];
          tb.appendChild(CB.el("tr", null, CB.el("td", null, v.name || k), CB.el("td", null, String(v.value) + " " + (v.unit || "")),
            CB.el("td", {class: "muted"}, CB.fmtTime(v.ts))));
        });
        detail.appendChild(CB.el("table", {class: "list"}, tb));
        var numeric = props.filter(function (k) { return typeof latest[k].value === "number"; });
        if (numeric.length) {
          var sel = CB.el("select", {id: "dev-prop"});
          numeric.forEach(function (k) { sel.appendChild(CB.el("option", {value: k}, latest[k].name || k)); });
          detail.appendChild(CB.field(CB.tr("dev.readings"), sel));
          detail.appendChild(CB.el("div", {id: "dev-chart", class: "chart", role: "img", "aria-label": CB.tr("dev.readings")}));
          sel.addEventListener("change", function () { drawReadings(d.code, sel.value, latest[sel.value].unit); });
          drawReadings(d.code, numeric[0], latest[numeric[0]].unit);
        }
      }
      if (alarms.length) {
        detail.appendChild(CB.el("h3", null, CB.tr("dev.alarms")));
        detail.appendChild(alarmTable(alarms, function () { open(code); }));
      }
      if (d.lat && d.lon) map.setView([d.lat, d.lon], Math.max(map.getZoom(), 14));
    }).catch(CB.fail);
  }

  function alarmTable(alarms, after) {
    var tb = CB.el("tbody");
    alarms.forEach(function (a) {
      var ackCell = CB.el("td");
      if (a.status === "active" && CB.can("iot.alarm.ack")) {
        ackCell.appendChild(CB.el("button", {type: "button", class: "btn secondary", "data-ack": a.id, onclick: function (ev) {
          ev.target.disabled = true;
          CB.api("POST", API + "/alarms/" + a.id + "/ack", {json: {}}).then(function () {
            CB.toast(CB.tr("common.ok"));
            loadAlarms();
            if (after) after();
          }).catch(function (err) { ev.target.disabled = false; CB.fail(err); });
        }}, CB.tr("act.ack")));
      }
      tb.appendChild(CB.el("tr", {"data-alarm-id": a.id, "data-status": a.status},
        CB.el("td", null, CB.el("span", {class: "badge", "data-severity": a.severity,
          style: "background:" + (CB.sevColor[a.severity] || "#888") + ";color:" + (CB.sevInk[a.severity] || "#fff")},
          (CB.lang === "en" ? a.severity_name_en : a.severity_name) || CB.sevName(a.severity))),
        CB.el("td", null, (CB.lang === "en" ? a.message_en : a.message_zh) || a.rule_name || ""),
        CB.el("td", null, a.device_code || ""), CB.el("td", null, CB.status(a.status)),
        CB.el("td", null, CB.fmtTime(a.raised_at)), ackCell));
    });
    return CB.el("table", {class: "list"}, CB.el("thead", null, CB.el("tr", null,
      CB.el("th", {scope: "col"}, CB.tr("dev.severity")), CB.el("th", {scope: "col"}, CB.tr("dev.message")),
      CB.el("th", {scope: "col"}, CB.tr("dev.code")), CB.el("th", {scope: "col"}, CB.tr("common.status")),
      CB.el("th", {scope: "col"}, CB.tr("common.time")), CB.el("th", {scope: "col"}, CB.tr("common.actions")))), tb);
  }

  function loadAlarms() {
    var box = document.getElementById("alarm-list");
    CB.api("GET", API + "/alarms", {query: {status: "open", limit: 50}}).then(function (data) {
      box.innerHTML = "";
      var items = CB.items(data);
      if (!items.length) { box.appendChild(CB.el("p", {class: "empty"}, CB.tr("common.none"))); return; }
      box.appendChild(alarmTable(items));
    }).catch(function (err) {
      box.innerHTML = "";
      box.appendChild(CB.el("p", {class: "notice"}, err.status === 404 ? CB.tr("common.not_connected") : err.message));
    });
  }

  loadList();
  loadAlarms();
  var want = new URLSearchParams(location.search).get("code");
  if (want) open(want);
})();
