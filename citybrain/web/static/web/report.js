/* The report form (grid worker and citizen): category picker, photo, GPS or map tap. */
(function () {
  "use strict";
  var CB = window.CB;
  var form = document.getElementById("report-form");
  if (!form) return;
  var citizen = form.dataset.mode === "citizen";
  var ENDPOINTS = {
    create: citizen ? "/api/v1/public/cases" : "/api/v1/cases",
    upload: "/api/v1/attachments"
  };
  CB.REPORT_ENDPOINTS = ENDPOINTS;
  var lon = document.getElementById("r-lon"), lat = document.getElementById("r-lat");
  var result = document.getElementById("r-result");

  // the map: tap to place
  var map = CB.map("r-map", {zoom: 13});
  var marker = null;
  function place(y, x, pan) {
    lat.value = Number(y).toFixed(6);
    lon.value = Number(x).toFixed(6);
    if (marker) marker.setLatLng([y, x]);
    else marker = L.marker([y, x], {keyboard: false}).addTo(map);
    if (pan) map.setView([y, x], Math.max(map.getZoom(), 15));
  }
  map.on("click", function (ev) { place(ev.latlng.lat, ev.latlng.lng, false); });
  // the district and its towns from the public outline (no login needed; names and boundaries only)
  CB.geoLayer(map, {url: "/api/v1/public/geo/outline", bbox: false,
    style: {style: function (f) {
      return CB.props(f).level === "district" ? {color: "#0b5cad", weight: 2.5, fill: false}
        : {color: "#6a86b0", weight: 1, fillOpacity: .03};
    }, interactive: false},
    onload: function (st) {
      map.getContainer().dataset.outline = String(st.count);
      if (st.count && !marker) map.fitBounds(st.layer.getBounds(), {padding: [8, 8]});
    }});
  [lon, lat].forEach(function (inp) {
    inp.addEventListener("change", function () {
      if (lon.value && lat.value) place(Number(lat.value), Number(lon.value), true);
    });
  });
  document.getElementById("r-gps").addEventListener("click", function () {
    if (!navigator.geolocation) { CB.toast(CB.tr("case.gps.fail"), "err"); return; }
    navigator.geolocation.getCurrentPosition(function (pos) {
      place(pos.coords.latitude, pos.coords.longitude, true);
    }, function () { CB.toast(CB.tr("case.gps.fail"), "err"); }, {enableHighAccuracy: true, timeout: 10000});
  });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    result.className = "";
    result.textContent = "";
    if (!form.checkValidity()) {
      var bad = form.querySelector(":invalid");
      var lab = bad && form.querySelector("label[for='" + bad.id + "']");
      result.className = "notice err";
      result.textContent = CB.tr("common.error") + "：" + (lab ? lab.textContent : "") + " " + (bad ? bad.validationMessage : "");
      if (bad) bad.focus();
      return;
    }
    var body = CB.formJSON(form);
    delete body.photo;
    body.lon = Number(body.lon);
    body.lat = Number(body.lat);
    var sel = document.getElementById("r-category");
    var opt = sel.options[sel.selectedIndex];
    body.title = ((opt ? opt.textContent : "") + (body.address ? " · " + body.address : "")).slice(0, 200);
    if (!citizen) {
      body.source = "patrol";
      if (opt && (opt.dataset.kind === "event" || opt.dataset.kind === "component")) body.category_kind = opt.dataset.kind;
    }
    CB.busy(form, true);
    CB.uploadPhotos(document.getElementById("r-photo"), ENDPOINTS.upload).then(function (refs) {
      if (refs.length) body.photos = refs;
      return CB.api("POST", ENDPOINTS.create, {json: body});
    }).then(function (c) {
      result.className = "notice ok";
      result.innerHTML = "";
      result.appendChild(document.createTextNode(CB.tr("case.reported")));
      var ticket = CB.el("strong", {id: "r-ticket"}, c.ticket || ("#" + c.id));
      result.appendChild(ticket);
      if (citizen) {
        result.appendChild(CB.el("p", null, CB.tr("case.keep_ticket")));
        result.appendChild(CB.el("a", {class: "btn secondary", href: "/citizen/track?ticket=" + encodeURIComponent(c.ticket || "")}, CB.tr("case.track")));
      }
      var keepPhone = citizen ? document.getElementById("r-phone").value : null;
      form.reset();
      if (keepPhone) document.getElementById("r-phone").value = keepPhone;
      if (marker) { map.removeLayer(marker); marker = null; }
      result.focus && result.setAttribute("tabindex", "-1");
      result.focus();
      if (CB.onReported) CB.onReported(c);
    }).catch(function (err) {
      result.className = "notice err";
      result.textContent = CB.tr("common.error") + "：" + err.message;
    }).then(function () { CB.busy(form, false); });
  });
})();
