/* The one map's layers, shared by the IOC big screen and the one-map page. */
(function () {
  "use strict";
  var CB = window.CB;

  function point(color, radius) {
    return function (f, latlng) {
      return L.circleMarker(latlng, {radius: radius || 6, color: "#fff", weight: 1, fillColor: color(f), fillOpacity: .9});
    };
  }
  function caseColor(f) {
    var p = CB.props(f);
    if (p.overdue) return "#d7263d";
    return CB.statusColor[p.status] || "#3f8efc";
  }
  function deviceColor(f) { return CB.statusColor[CB.props(f).status] || "#8d99ae"; }
  function alarmColor(f) { return CB.sevColor[CB.props(f).severity] || "#d7263d"; }

  function casePopup(f) {
    var p = CB.props(f);
    var box = CB.el("div", {class: "popup"},
      CB.el("strong", null, (p.ticket || ("#" + (p.id || p.case_id || ""))) + " "),
      CB.el("span", {class: "badge", style: "background:" + caseColor(f)}, CB.status(p.status)),
      CB.popupTable(p, [
        ["category_name", CB.tr("case.category")], ["category_code", CB.tr("case.category")],
        ["dept_name", CB.tr("case.dept")], ["address", CB.tr("case.address")],
        ["grid_code", CB.tr("case.grid")], ["deadline_at", CB.tr("case.deadline"), CB.fmtTime],
        ["reported_at", CB.tr("case.reported_at"), CB.fmtTime], ["created_at", CB.tr("case.reported_at"), CB.fmtTime],
        ["overdue", CB.tr("case.overdue"), function (v) { return v ? "✔" : ""; }]
      ]));
    return box;
  }
  function devicePopup(f) {
    var p = CB.props(f);
    return CB.el("div", {class: "popup"},
      CB.el("strong", null, (p.name || p.code || "") + " "),
      CB.el("span", {class: "badge", style: "background:" + deviceColor(f)}, CB.status(p.status)),
      CB.popupTable(p, [["code", CB.tr("dev.code")], ["device_code", CB.tr("dev.code")],
        ["model_name", CB.tr("dev.type")], ["model_code", CB.tr("dev.type")], ["type", CB.tr("dev.type")],
        ["grid_code", CB.tr("case.grid")], ["last_seen_at", CB.tr("common.time"), CB.fmtTime]]),
      CB.el("a", {href: "/devices?code=" + encodeURIComponent(p.code || p.device_code || "")}, CB.tr("common.details")));
  }
  function alarmPopup(f) {
    var p = CB.props(f);
    return CB.el("div", {class: "popup"},
      CB.el("strong", null, (CB.lang === "en" ? (p.message_en || p.message_zh) : (p.message_zh || p.message_en)) || p.rule_name || ""),
      CB.popupTable(p, [["severity", CB.tr("dev.severity")], ["device_code", CB.tr("dev.code")],
        ["value", "value"], ["raised_at", CB.tr("common.time"), CB.fmtTime], ["at", CB.tr("common.time"), CB.fmtTime]]));
  }
  function areaPopup(f) {
    var p = CB.props(f);
    return CB.el("div", null, CB.el("strong", null, CB.name(p)), CB.el("div", {class: "muted"}, p.code || ""));
  }

  /* Hotspots: open cases binned into ~500 m cells, drawn as circles sized by count. */
  function hotspots(map) {
    var layer = L.layerGroup();
    return {
      layer: layer,
      draw: function (features) {
        layer.clearLayers();
        var cells = {};
        features.forEach(function (f) {
          if (!f.geometry || f.geometry.type !== "Point") return;
          var c = f.geometry.coordinates, key = Math.round(c[0] / .005) + ":" + Math.round(c[1] / .005);
          var cell = cells[key] || (cells[key] = {n: 0, x: 0, y: 0});
          cell.n++; cell.x += c[0]; cell.y += c[1];
        });
        Object.keys(cells).forEach(function (k) {
          var c = cells[k];
          if (c.n < 3) return;
          L.circle([c.y / c.n, c.x / c.n], {radius: 120 + 40 * Math.min(c.n, 30), color: "#ff4d4f", weight: 0,
            fillOpacity: Math.min(.15 + c.n * .03, .55), interactive: false}).addTo(layer);
        });
      }
    };
  }

  /**
   * Add the standard layers to a map. opts.filters() returns {category, dept, days, overdue, status};
   * opts.onchange(name, state) is told each layer's feature count. Returns {name: state}.
   */
  CB.standardLayers = function (map, opts) {
    opts = opts || {};
    var dark = !!opts.dark;
    var filters = opts.filters || function () { return {}; };
    var out = {};
    function changed(name) { return function (st) { if (opts.onchange) opts.onchange(name, st); }; }
    out.district = CB.geoLayer(map, {url: "/api/v1/geo/areas", bbox: false, query: {level: "district"},
      style: {style: {color: dark ? "#39c0ff" : "#0b5cad", weight: 3, fill: false}, onEachFeature: function (f, l) { l.bindTooltip(CB.name(f.properties)); }},
      onload: function (st) {
        changed("district")(st);
        if (st.count && !opts.keepView) { try { map.fitBounds(st.layer.getBounds(), {padding: [10, 10]}); } catch (e) { /* empty */ } }
      }});
    out.towns = CB.geoLayer(map, {url: "/api/v1/geo/areas", bbox: false, query: {level: "town"},
      style: {style: {color: dark ? "#5f8fc9" : "#6a86b0", weight: 1.5, dashArray: "4 3", fillOpacity: dark ? .08 : .04},
        onEachFeature: function (f, l) { l.bindPopup(function () { return areaPopup(f); }); }},
      onload: changed("towns")});
    out.grids = CB.geoLayer(map, {url: "/api/v1/geo/grids", enabled: !!opts.grids,
      style: {style: {color: dark ? "#2c5d92" : "#9aa9bf", weight: .6, fillOpacity: 0},
        onEachFeature: function (f, l) { l.bindPopup(function () { return areaPopup(f); }); }},
      onload: changed("grids")});
    out.devices = CB.geoLayer(map, {url: "/api/v1/iot/devices.geojson", enabled: opts.devices !== false,
      query: function () { var f = filters(); return {status: f.deviceStatus}; },
      style: {pointToLayer: point(deviceColor, 4), onEachFeature: function (f, l) { l.bindPopup(function () { return devicePopup(f); }); }},
      onload: changed("devices")});
    var hot = hotspots(map);
    out.cases = CB.geoLayer(map, {url: "/api/v1/cases.geojson", enabled: opts.cases !== false,
      query: function () {
        var f = filters();
        var q = {status: f.status === undefined ? "open" : (f.status === "all" ? undefined : f.status),
          category_code: f.category || undefined, dept_org_id: f.dept || undefined, overdue: f.overdue ? "true" : undefined};
        if (f.days) q.since = new Date(Date.now() - f.days * 86400000).toISOString();
        return q;
      },
      filter: function (feat) {  // filters the API may not apply itself
        var f = filters(), p = CB.props(feat);
        if (f.category && p.category_code !== f.category) return false;
        if (f.dept && String(p.dept_org_id) !== String(f.dept)) return false;
        if (f.days && p.reported_at && Date.parse(p.reported_at) < Date.now() - f.days * 86400000) return false;
        return true;
      },
      style: {pointToLayer: point(caseColor, 6), onEachFeature: function (f, l) { l.bindPopup(function () { return casePopup(f); }); }},
      onload: function (st) { hot.draw(st.data || []); changed("cases")(st); }});
    out.alarms = CB.geoLayer(map, {url: "/api/v1/iot/alarms.geojson", enabled: opts.alarms !== false, query: {status: "active"},
      style: {pointToLayer: point(alarmColor, 8), onEachFeature: function (f, l) { l.bindPopup(function () { return alarmPopup(f); }); }},
      onload: changed("alarms")});
    out.hotspots = {layer: hot.layer, enabled: false, count: 0, reload: function () { /* drawn from cases */ },
      setEnabled: function (on) { if (on) hot.layer.addTo(map); else map.removeLayer(hot.layer); }};
    if (opts.hotspots) { out.hotspots.setEnabled(true); }
    return out;
  };
})();
