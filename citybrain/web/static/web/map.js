/* One map page: layer toggles, filters by category, department, status and time. */
(function () {
  "use strict";
  var CB = window.CB;
  var form = document.getElementById("map-form");
  form.addEventListener("submit", function (ev) { ev.preventDefault(); });  // filters apply on change
  function val(id) { return document.getElementById(id).value; }
  function filters() {
    return {category: val("f-category"), dept: val("f-dept"), status: val("f-status"),
      days: val("f-days") ? Number(val("f-days")) : 0, overdue: document.getElementById("f-overdue").checked,
      deviceStatus: val("f-devstatus")};
  }
  var map = CB.map("map");
  var layers = CB.standardLayers(map, {
    filters: filters,
    grids: document.getElementById("layer-grids").checked,
    hotspots: document.getElementById("layer-hotspots").checked,
    onchange: function (name, st) {
      var span = document.getElementById("count-" + name);
      if (!span) return;
      span.dataset.count = st.connected === false ? "" : String(st.count);
      span.textContent = st.connected === false ? "(" + CB.tr("map.layer_missing") + ")" : "(" + st.count + ")";
    }
  });
  form.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t.name === "layer") {
      layers[t.value].setEnabled(t.checked);
      return;
    }
    if (t.name === "device_status") layers.devices.reload();
    else { layers.cases.reload(); layers.hotspots.reload(); }
  });
  // filter choices from the cases module (categories) and identity (departments)
  CB.api("GET", "/api/v1/cases/categories", {noRedirect: true}).then(function (data) {
    var sel = document.getElementById("f-category");
    CB.items(data).forEach(function (c) {
      sel.appendChild(CB.el("option", {value: c.code}, (c.code ? c.code + " " : "") + CB.name(c)));
    });
  }).catch(function () { /* cases module not installed: no categories */ });
  CB.api("GET", "/api/v1/orgs", {query: {type: "department"}, noRedirect: true}).then(function (orgs) {
    var sel = document.getElementById("f-dept");
    CB.items(orgs).forEach(function (o) { sel.appendChild(CB.el("option", {value: o.id}, CB.name(o))); });
  }).catch(function () { /* no departments visible */ });
  var legend = document.getElementById("map-legend");
  [["reported", CB.statusColor.reported], ["filed", CB.statusColor.filed], ["dispatched", CB.statusColor.dispatched],
    ["in_progress", CB.statusColor.in_progress], ["handled", CB.statusColor.handled], ["verified", CB.statusColor.verified]]
    .forEach(function (x) { legend.appendChild(CB.el("span", null, CB.el("i", {style: "background:" + x[1]}), CB.status(x[0]))); });
  legend.appendChild(CB.el("span", null, CB.el("i", {style: "background:#d7263d"}), CB.tr("case.overdue")));
  legend.appendChild(CB.el("span", null, CB.el("i", {style: "background:" + CB.statusColor.online}), CB.tr("map.devices") + " " + CB.status("online")));
  legend.appendChild(CB.el("span", null, CB.el("i", {style: "background:" + CB.statusColor.offline}), CB.tr("map.devices") + " " + CB.status("offline")));
  [1, 2, 3, 4].forEach(function (l) {
    legend.appendChild(CB.el("span", null, CB.el("i", {style: "background:" + CB.sevColor[l] + ";border:2px solid #fff"}),
      CB.tr("map.alarms") + " " + CB.sevName(l)));
  });
  window.CB_MAP = {map: map, layers: layers};
})();
