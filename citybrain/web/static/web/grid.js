/* Grid-worker page: report, my reports, verification tasks (核查). */
(function () {
  "use strict";
  var CB = window.CB;
  var panes = ["report", "mine", "verify"];
  function show(name) {
    panes.forEach(function (p) {
      document.getElementById("tab-" + p).setAttribute("aria-selected", p === name ? "true" : "false");
      document.getElementById("pane-" + p).hidden = p !== name;
    });
    if (name === "mine") loadMine();
    if (name === "verify") loadVerify();
  }
  panes.forEach(function (p) {
    document.getElementById("tab-" + p).addEventListener("click", function () { show(p); });
  });

  function openCase(box, id, codes, reload) {
    box.hidden = false;
    CB.cases.get(id).then(function (c) {
      CB.caseDetail(box, c, CB.actionForms(c, codes, function () { box.hidden = true; reload(); }));
      box.dataset.caseId = c.id;
      box.scrollIntoView({block: "start"});
    }).catch(CB.fail);
  }
  function loadMine() {
    var box = document.getElementById("mine-list");
    CB.api("GET", "/api/v1/cases/mine", {query: {limit: 50}}).then(function (data) {
      CB.caseTable(box, CB.items(data), function (c) { openCase(document.getElementById("mine-detail"), c.id, [], loadMine); },
        {timeField: "reported_at", timeLabel: CB.tr("case.reported_at")});
    }).catch(CB.fail);
  }
  function loadVerify() {
    var box = document.getElementById("verify-list");
    CB.cases.list({status: "handled"}).then(function (data) {
      var items = CB.items(data);
      var cnt = document.getElementById("verify-count");
      cnt.textContent = items.length;
      cnt.dataset.count = String(items.length);
      CB.caseTable(box, items, function (c) { openCase(document.getElementById("verify-detail"), c.id, ["verify", "rework"], loadVerify); });
    }).catch(CB.fail);
  }
  CB.onReported = function () { /* the list refreshes when opened */ };
  loadVerify();
})();
