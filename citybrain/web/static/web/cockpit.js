/* Leader cockpit: indicators, trends, evaluation rankings (departments, towns, grid workers), overdue cases. */
(function () {
  "use strict";
  var CB = window.CB, pick = CB.pick;

  function kpi(id, value, text) {
    var box = document.getElementById("ck-" + id);
    var v = box.querySelector(".v");
    v.dataset.value = value === undefined || value === null ? "" : String(value);
    v.textContent = value === null ? CB.tr("common.not_connected") : (text !== undefined ? text : CB.num(value));
  }

  if (CB.can("ioc.view")) {
    CB.api("GET", "/api/v1/ioc/summary").then(function (s) {
      window.CB_SUMMARY = s;
      var c = s.cases || {};
      if (!c.connected) {
        ["cases_today", "cases_open", "cases_overdue", "closure_rate", "ontime_rate", "satisfaction"].forEach(function (k) { kpi(k, null); });
        return;
      }
      kpi("cases_today", pick(c, "cases_today", "today"));
      kpi("cases_open", pick(c, "cases_open", "open"));
      kpi("cases_overdue", pick(c, "cases_overdue", "overdue"));
      kpi("closure_rate", pick(c, "closure_rate"), CB.pct(pick(c, "closure_rate")));
      kpi("ontime_rate", pick(c, "ontime_rate", "on_time_rate"), CB.pct(pick(c, "ontime_rate", "on_time_rate")));
      kpi("satisfaction", pick(c, "satisfaction", "satisfaction_rate"), CB.pct(pick(c, "satisfaction", "satisfaction_rate")));
      var trend = pick(c, "trend_30d", "trend") || [];
      if (window.echarts) {
        echarts.init(document.getElementById("ck-trend")).setOption({
          grid: {left: 40, right: 12, top: 30, bottom: 24}, legend: {top: 0}, tooltip: {trigger: "axis"},
          xAxis: {type: "category", data: trend.map(function (d) { return String(pick(d, "date", "day") || "").slice(5, 10); })},
          yAxis: {type: "value", minInterval: 1},
          series: [{name: CB.tr("ioc.reported"), type: "bar", data: trend.map(function (d) { return pick(d, "reported", "created", "count") || 0; })},
            {name: CB.tr("ioc.closed"), type: "line", data: trend.map(function (d) { return pick(d, "closed") || 0; })}]
        });
      }
    }).catch(CB.fail);
  }

  var EVAL_COLS = [["reported", "count", "cases"], ["closure_rate"], ["on_time_closure_rate", "on_time_rate"], ["score"]];
  // a grid worker is rated on its own reports and checks (有效上报率, 按时核查率), not on closures
  var WORKER_COLS = [["reported"], ["filing_rate"], ["on_time_verify_rate"], ["score"]];
  function rankTable(boxId, level) {
    var box = document.getElementById(boxId);
    var cols = level === "gridworker" ? WORKER_COLS : EVAL_COLS;
    var heads = level === "gridworker" ? [CB.tr("cockpit.reports"), CB.tr("cockpit.filing_rate"), CB.tr("cockpit.verify_rate")]
      : [CB.tr("cockpit.cases"), CB.tr("ioc.closure_rate"), CB.tr("ioc.ontime_rate")];
    CB.api("GET", "/api/v1/cases/evaluation", {query: {group_by: level}}).then(function (data) {
      var rows = CB.items(data);
      box.innerHTML = "";
      if (!rows.length) { box.appendChild(CB.el("p", {class: "empty"}, CB.tr("common.none"))); return; }
      var tb = CB.el("tbody"), rank = 0;
      rows.slice(0, 15).forEach(function (r) {
        var scored = r.score !== null && r.score !== undefined;  // no score: nothing to rate, or not a real unit
        tb.appendChild(CB.el("tr", {"data-scored": scored ? "1" : "0"}, CB.el("td", null, scored ? String(++rank) : "—"),
          CB.el("td", null, CB.name(r) || r.org_name || r.user_name || r.code || ""),
          CB.el("td", null, CB.num(pick.apply(null, [r].concat(cols[0])))),
          CB.el("td", null, CB.pct(pick.apply(null, [r].concat(cols[1])))),
          CB.el("td", null, CB.pct(pick.apply(null, [r].concat(cols[2])))),
          CB.el("td", null, scored ? Number(r.score).toFixed(1) : "—")));
      });
      box.appendChild(CB.el("table", {class: "list", "data-level": level}, CB.el("thead", null, CB.el("tr", null,
        CB.el("th", {scope: "col"}, "#"), CB.el("th", {scope: "col"}, CB.tr("dev.name")),
        CB.el("th", {scope: "col"}, heads[0]), CB.el("th", {scope: "col"}, heads[1]),
        CB.el("th", {scope: "col"}, heads[2]), CB.el("th", {scope: "col"}, CB.tr("cockpit.score")))), tb));
    }).catch(function (err) {
      box.innerHTML = "";
      box.appendChild(CB.el("p", {class: "notice"}, err.status === 404 ? CB.tr("common.not_connected") : err.message));
    });
  }
  rankTable("ck-rank-dept", "dept");
  rankTable("ck-rank-town", "town");
  rankTable("ck-rank-worker", "gridworker");

  function loadOverdue() {
    var box = document.getElementById("ck-overdue"), det = document.getElementById("ck-detail");
    CB.cases.list({status: "open", overdue: "true"}).then(function (data) {
      CB.caseTable(box, CB.items(data), function (c) {
        det.hidden = false;
        CB.cases.get(c.id).then(function (full) {
          CB.caseDetail(det, full, CB.can("case.supervise") ? CB.actionForms(full, ["supervise"], loadOverdue) : []);
        }).catch(CB.fail);
      });
    }).catch(function (err) {
      box.innerHTML = "";
      box.appendChild(CB.el("p", {class: "notice"}, err.status === 404 ? CB.tr("common.not_connected") : err.message));
    });
  }
  loadOverdue();
})();
