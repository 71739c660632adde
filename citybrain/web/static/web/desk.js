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
  var q = CB.queues({
    tabs: "tabs", list: "queue", detail: "detail",
    tabs_def: [
      {key: "new", label: CB.tr("desk.new"), query: {status: "reported"}, table: {timeField: "reported_at", timeLabel: CB.tr("case.reported_at")}},
      {key: "dispatch", label: CB.tr("desk.dispatch"), query: {status: "filed"}, table: {timeField: "reported_at", timeLabel: CB.tr("case.reported_at")}},
      {key: "verify", label: CB.tr("desk.verify"), query: {status: "handled"}},
      {key: "close", label: CB.tr("desk.close"), query: {status: "verified"}},
      {key: "extensions", label: CB.tr("desk.extensions"), query: {extension: "pending"}},
      {key: "overdue", label: CB.tr("desk.supervision"), query: {overdue: "true", open: "true"}}
    ],
    detail_fn: function (box, c, tab, refresh) {
      CB.caseDetail(box, c, CB.actionForms(c, ACTIONS[tab] || [], refresh));
    }
  });
  window.CB_DESK = q;
})();
