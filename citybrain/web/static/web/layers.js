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
  /* More open cases in view than MAX_POINTS: the server answers counted cells; a click zooms in. */
  var MAX_POINTS = 1500;
  /* A point, or (a counted cell from the server) a circle sized by its count that zooms in when clicked. */
  function pointOrCluster(one, clusterColor, small) {
    return function (f, latlng) {
      var p = CB.props(f);
      if (!p.cluster) return one(f, latlng);
      var size = small ? Math.min(3 + 1.5 * Math.log(p.count + 1), 10) : Math.min(6 + 3 * Math.log(p.count + 1), 22);
      var m = L.circleMarker(latlng, {radius: size, color: "#fff", weight: small ? .5 : 1,
        fillColor: clusterColor(p), fillOpacity: small ? .55 : .75});
      m.bindTooltip(String(p.count), {direction: "center", className: "cluster-n"});
      m.on("click", function () { m._map.setView(latlng, m._map.getZoom() + 2); });
      return m;
    };
  }
  function deviceColor(f) { return CB.statusColor[CB.props(f).status] || "#8d99ae"; }
  var caseOrCluster = pointOrCluster(point(caseColor, 6), function () { return "#3f8efc"; });
  /* Device cells: the online colour when every device in it is online, the offline colour otherwise. */
  var deviceOrCluster = pointOrCluster(point(deviceColor, 4), function (p) {
    return CB.statusColor[(p.offline || 0) > 0 ? "offline" : "online"] || "#2a9d8f";
  }, true);  // small: the devices are the background the cases and alarms stand out on
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
      CB.popupTable(p, [["severity", CB.tr("dev.severity"), CB.sevName], ["device_code", CB.tr("dev.code")],
        ["value", "value"], ["raised_at", CB.tr("common.time"), CB.fmtTime], ["at", CB.tr("common.time"), CB.fmtTime]]));
  }
  function areaPopup(f) {
    var p = CB.props(f);
    return CB.el("div", null, CB.el("strong", null, CB.name(p)), CB.el("div", {class: "muted"}, p.code || ""));
  }

  function hotspotPopup(f) {
    var p = CB.props(f);
    return CB.el("div", {class: "popup"},
      CB.el("strong", null, CB.tr("map.hotspots") + " · " + (p.category_name || p.category_code || "")),
      CB.popupTable(p, [["count", CB.tr("map.hotspot_count")], ["grid_code", CB.tr("case.grid")],
        ["window_start", CB.tr("map.hotspot_from"), CB.fmtTime], ["window_end", CB.tr("map.hotspot_to"), CB.fmtTime]]));
  }
  /* Hotspots flagged by the cases module's spatio-temporal clustering: circles of the clustering radius. */
  function hotspotLayer(f, latlng) {
    var p = CB.props(f);
    return L.circle(latlng, {radius: p.radius_m || 300, color: "#ff4d4f", weight: 1.5, dashArray: "4 3",
      fillColor: "#ff4d4f", fillOpacity: Math.min(.15 + (p.count || 0) * .04, .55)});
  }

  /**
   * Add the standard layers to a map. opts.filters() returns {category, dept, days, overdue, status};
   * open cases and devices come as counted cells when the view holds more than MAX_POINTS of them;
   * opts.onchange(name, state) is told each layer's feature count. Returns {name: state}.
   */
  CB.standardLayers = function (map, opts) {
    opts = opts || {};
    var dark = !!opts.dark;
    var filters = opts.filters || function () { return {}; };
    var out = {};
    // The layers of the visible area wait until the view is fitted to the district (one round of requests for
    // the area actually shown, not one for the default view and another after the fit).
    var defer = !opts.keepView, fitted = false;
    function changed(name) { return function (st) { if (opts.onchange) opts.onchange(name, st); }; }
    out.district = CB.geoLayer(map, {url: "/api/v1/geo/areas", bbox: false, query: {level: "district"},
      style: {style: {color: dark ? "#39c0ff" : "#0b5cad", weight: 3, fill: false}, onEachFeature: function (f, l) { l.bindTooltip(CB.name(f.properties)); }},
      onload: function (st) {
        changed("district")(st);
        if (st.count && !opts.keepView) { try { map.fitBounds(st.layer.getBounds(), {padding: [10, 10], animate: false}); } catch (e) { /* empty */ } }
        if (defer && !fitted) {
          fitted = true;
          ["grids", "devices", "cases", "alarms", "hotspots"].forEach(function (n) { if (out[n]) out[n].loadNow(); });
        }
      }});
    out.towns = CB.geoLayer(map, {url: "/api/v1/geo/areas", bbox: false, query: {level: "town"},
      style: {style: {color: dark ? "#5f8fc9" : "#6a86b0", weight: 1.5, dashArray: "4 3", fillOpacity: dark ? .08 : .04},
        onEachFeature: function (f, l) { l.bindPopup(function () { return areaPopup(f); }); }},
      onload: changed("towns")});
    out.grids = CB.geoLayer(map, {url: "/api/v1/geo/grids", enabled: !!opts.grids, defer: defer,
      style: {style: {color: dark ? "#2c5d92" : "#9aa9bf", weight: .6, fillOpacity: 0},
        onEachFeature: function (f, l) { l.bindPopup(function () { return areaPopup(f); }); }},
      onload: changed("grids")});
    out.devices = CB.geoLayer(map, {url: "/api/v1/iot/devices.geojson", enabled: opts.devices !== false, defer: defer,
      query: function () { var f = filters(); return {status: f.deviceStatus, max_points: MAX_POINTS}; },
      style: {pointToLayer: deviceOrCluster, onEachFeature: function (f, l) {
        if (!CB.props(f).cluster) l.bindPopup(function () { return devicePopup(f); });
      }},
      onload: changed("devices")});
    out.cases = CB.geoLayer(map, {url: "/api/v1/cases.geojson", enabled: opts.cases !== false, defer: defer,
      query: function () {
        var f = filters();
        var q = {max_points: MAX_POINTS, status: f.status === undefined ? "open" : (f.status === "all" ? undefined : f.status),
          category_code: f.category || undefined, dept_org_id: f.dept || undefined, overdue: f.overdue ? "true" : undefined};
        if (f.days) q.since = new Date(Date.now() - f.days * 86400000).toISOString();
        return q;
      },
      style: {pointToLayer: caseOrCluster, onEachFeature: function (f, l) {
        if (!CB.props(f).cluster) l.bindPopup(function () { return casePopup(f); });
      }},
      onload: changed("cases")});
    out.alarms = CB.geoLayer(map, {url: "/api/v1/iot/alarms.geojson", enabled: opts.alarms !== false, defer: defer, query: {status: "active"},
      style: {pointToLayer: point(alarmColor, 8), onEachFeature: function (f, l) { l.bindPopup(function () { return alarmPopup(f); }); }},
      onload: changed("alarms")});
    out.hotspots = CB.geoLayer(map, {url: "/api/v1/cases/hotspots.geojson", enabled: !!opts.hotspots, defer: defer,
      query: function () { var f = filters(); return {days: f.days || 7, category_code: f.category || undefined}; },
      style: {pointToLayer: hotspotLayer, onEachFeature: function (f, l) { l.bindPopup(function () { return hotspotPopup(f); }); }},
      onload: changed("hotspots")});
    return out;
  };
})();
