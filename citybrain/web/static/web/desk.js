/* Operator workbench (受理/派遣): new cases, dispatch, verification, closure, extensions, overdue. */
(function () {
  "use strict";
  var CB = window.CB;
  var ACTIONS = {
    "new": ["file", "reject", "answer"],
    dispatch: ["dispatch", "answer"],
    verify: ["verify", "rework"],
    close: ["close", "rework"],
    extensions: ["approve_extension", "refuse_extension", "supervise"],
    overdue: ["supervise", "suspend"]
  };
  /* cases with a pending extension request: from the centre's notifications, checked against each case */
  function pendingExtensions() {
    return CB.api("GET", "/api/v1/cases/notifications", {query: {limit: 200}}).then(function (notes) {
      var ids = [];
      CB.items(notes).forEach(function (n) {
        if (n.kind === "extension_request" && n.case_id && ids.indexOf(n.case_id) < 0) ids.push(n.case_id);
      });
      return Promise.all(ids.slice(0, 30).map(function (id) { return CB.cases.get(id).catch(function () { return null; }); }));
    }).then(function (cases) {
      return cases.filter(function (c) {
        return c && (c.extensions || []).some(function (x) { return x.status === "pending"; });
      });
    });
  }
  var q = CB.queues({
    tabs: "tabs", list: "queue", detail: "detail",
    tabs_def: [
      {key: "new", label: CB.tr("desk.new"), query: {status: "reported"}, table: {timeField: "reported_at", timeLabel: CB.tr("case.reported_at")}},
      {key: "dispatch", label: CB.tr("desk.dispatch"), query: {status: "filed"}, table: {timeField: "reported_at", timeLabel: CB.tr("case.reported_at")}},
      {key: "verify", label: CB.tr("desk.verify"), query: {status: "handled"}},
      {key: "close", label: CB.tr("desk.close"), query: {status: "verified"}},
      {key: "extensions", label: CB.tr("desk.extensions"), load: pendingExtensions},
      {key: "overdue", label: CB.tr("desk.supervision"), query: {status: "open", overdue: "true"}}
    ],
    detail_fn: function (box, c, tab, refresh) {
      CB.caseDetail(box, c, CB.actionForms(c, ACTIONS[tab] || [], refresh));
    }
  });
  window.CB_DESK = q;
})();
