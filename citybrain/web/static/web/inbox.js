/* Department inbox: to sign for, in progress, handled (uses work.js). */
(function () {
  "use strict";
  var ACTIONS = {todo: ["accept", "return"], doing: ["handle", "request_extension", "return"], done: []};
  window.CB_INBOX = CB.queues({
    tabs: "tabs", list: "queue", detail: "detail",
    tabs_def: [
      {key: "todo", label: CB.tr("inbox.todo"), query: {status: "dispatched"}},
      {key: "doing", label: CB.tr("inbox.doing"), query: {status: "in_progress,rework,suspended"}},
      {key: "done", label: CB.tr("desk.verify"), query: {status: "handled"}, table: {timeField: "handled_at", timeLabel: CB.tr("common.time")}}
    ],
    detail_fn: function (box, c, tab, refresh) {
      CB.caseDetail(box, c, CB.actionForms(c, ACTIONS[tab] || [], refresh));
    }
  });
})();
