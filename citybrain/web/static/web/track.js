/* Citizen tracking by ticket number + phone, and rating of a closed case (no login). */
(function () {
  "use strict";
  var CB = window.CB;
  var API = "/api/v1/public/cases";
  var form = document.getElementById("track-form"), out = document.getElementById("t-result");
  var rate = document.getElementById("rate-form"), errBox = document.getElementById("t-error");
  var current = null;

  function render(c) {
    current = c;
    out.hidden = false;
    out.innerHTML = "";
    out.appendChild(CB.el("h2", null, (c.ticket || "") + " ", CB.caseBadge(c)));
    out.appendChild(CB.popupTable(c, [["title", CB.tr("case.category")], ["address", CB.tr("case.address")],
      ["reported_at", CB.tr("case.reported_at"), CB.fmtTime], ["status_name", CB.tr("common.status")],
      ["public_reply", CB.tr("case.result")], ["closed_at", CB.tr("act.close"), CB.fmtTime]]));
    var steps = c.events || c.history || c.steps || [];
    if (steps.length) {
      out.appendChild(CB.el("ol", {class: "history"}, steps.map(function (e) {
        var label = CB.lang === "en" ? CB.tr("act." + e.action, e.action) : (e.name || CB.tr("act." + e.action, e.action));
        return CB.el("li", {"data-action": e.action}, CB.el("time", null, CB.fmtTime(e.at)), " ", label,
          e.status ? " → " + CB.status(e.status) : "");
      })));
    }
    var canRate = c.can_rate !== undefined ? c.can_rate : (c.status === "closed" && !c.rating);
    rate.hidden = !canRate;
    if (c.rating) out.appendChild(CB.el("p", {class: "notice ok", id: "t-rated"}, CB.tr("case.rate.done")));
  }
  function lookup() {
    var v = CB.formJSON(form);
    return CB.api("POST", API + "/track", {json: {ticket: v.ticket.trim(), phone: v.phone.trim()}, noRedirect: true}).then(render);
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    errBox.hidden = true;
    if (!form.checkValidity()) { form.reportValidity(); return; }
    CB.busy(form, true);
    lookup().catch(function (err) {
      out.hidden = true; rate.hidden = true;
      errBox.textContent = err.message;
      errBox.hidden = false;
    }).then(function () { CB.busy(form, false); });
  });
  rate.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!current) return;
    var v = CB.formJSON(rate);
    var who = CB.formJSON(form);
    CB.busy(rate, true);
    CB.api("POST", API + "/rating",
      {json: {ticket: current.ticket, phone: who.phone.trim(), satisfaction: v.rating, comment: v.comment}, noRedirect: true})
      .then(function () { CB.toast(CB.tr("case.rate.done")); rate.hidden = true; return lookup(); })
      .catch(CB.fail).then(function () { CB.busy(rate, false); });
  });
})();
