/* Case work pages (operator workbench, department inbox, grid worker): queues, case detail, action forms. */
(function () {
  "use strict";
  var CB = window.CB, pick = CB.pick;
  var API = "/api/v1/cases";

  CB.cases = {
    list: function (query) { return CB.api("GET", API, {query: Object.assign({limit: 50}, query)}); },
    get: function (id) { return CB.api("GET", API + "/" + id); },
    act: function (id, action, body) { return CB.api("POST", API + "/" + id + "/actions/" + action, {json: body || {}}); }
  };

  /* Upload chosen photos; returns the list of stored attachment references. */
  CB.uploadPhotos = function (input, url) {
    var files = input && input.files ? Array.prototype.slice.call(input.files) : [];
    if (!files.length) return Promise.resolve([]);
    return Promise.all(files.map(function (f) {
      var fd = new FormData();
      fd.append("file", f, f.name);
      return CB.api("POST", url || "/api/v1/attachments", {form: fd});
    })).then(function (res) {
      return res.map(function (r) { return r.url; });
    });
  };

  var field = CB.field;

  function caseTitle(c) {
    return (c.ticket || ("#" + c.id)) + " · " + (c.category_name || c.title || "");
  }

  function badge(c) {
    var out = [CB.el("span", {class: "badge", style: "background:" + (CB.statusColor[c.status] || "#6c757d"), "data-status": c.status}, CB.status(c.status))];
    if (c.overdue) out.push(CB.el("span", {class: "badge overdue"}, CB.tr("case.overdue")));
    if (c.supervision_level) out.push(CB.el("span", {class: "badge overdue"}, CB.tr("case.supervised") + " " + c.supervision_level));
    return out;
  }
  CB.caseBadge = badge;

  /* A queue table of cases; onpick(case) when a row is chosen by click or Enter. */
  CB.caseTable = function (box, cases, onpick, opts) {
    opts = opts || {};
    box.innerHTML = "";
    if (!cases.length) { box.appendChild(CB.el("p", {class: "empty"}, CB.tr("common.none"))); return; }
    var tb = CB.el("tbody");
    var table = CB.el("table", {class: "list"},
      CB.el("thead", null, CB.el("tr", null,
        CB.el("th", {scope: "col"}, CB.tr("case.ticket")), CB.el("th", {scope: "col"}, CB.tr("case.category")),
        CB.el("th", {scope: "col"}, CB.tr("case.address")), CB.el("th", {scope: "col"}, CB.tr("common.status")),
        CB.el("th", {scope: "col"}, opts.timeLabel || CB.tr("case.deadline")))), tb);
    cases.forEach(function (c) {
      var tr = CB.el("tr", {tabindex: "0", "data-case-id": c.id, "data-ticket": c.ticket || ""},
        CB.el("td", null, c.ticket || ("#" + c.id)),
        CB.el("td", null, c.category_name || c.title || ""),
        CB.el("td", null, c.address || c.grid_code || ""),
        CB.el("td", null, badge(c)),
        CB.el("td", null, CB.fmtTime(opts.timeField ? c[opts.timeField] : (c.deadline_at || c.reported_at))));
      function choose() {
        Array.prototype.forEach.call(tb.children, function (r) { r.classList.remove("sel"); });
        tr.classList.add("sel");
        onpick(c);
      }
      tr.addEventListener("click", choose);
      tr.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); choose(); } });
      tb.appendChild(tr);
    });
    box.appendChild(table);
  };

  function photoList(list) {
    if (!list || !list.length) return null;
    return CB.el("div", {class: "photos"}, list.map(function (p) {
      var src = typeof p === "string" ? p : (p.url || p.href || "");
      if (!src) return null;
      // only this server's own files are shown: a same-origin path ("/…", never "//host" or "/\\host")
      if (!/^\/(?![\/\\])/.test(src)) return CB.el("span", {class: "muted"}, src + " ");
      return CB.el("a", {href: src, target: "_blank", rel: "noopener"}, CB.el("img", {src: src, alt: CB.tr("common.photo"), loading: "lazy"}));
    }));
  }
  CB.photoList = photoList;

  /* The case detail with its history and the action forms the caller passes. */
  CB.caseDetail = function (box, c, actions) {
    box.innerHTML = "";
    var h = CB.el("h2", null, caseTitle(c), badge(c));
    box.appendChild(h);
    box.appendChild(CB.popupTable(c, [
      ["source", CB.tr("case.source"), function (v) { return CB.tr("source." + v, v); }],
      ["category_code", CB.tr("case.category"), function (v, p) { return v + " " + (p.category_name || ""); }],
      ["description", CB.tr("case.description")], ["address", CB.tr("case.address")], ["grid_code", CB.tr("case.grid")],
      ["reporter_name", CB.tr("case.reporter")], ["reporter_phone", CB.tr("case.phone")],
      ["reported_at", CB.tr("case.reported_at"), CB.fmtTime], ["deadline_at", CB.tr("case.deadline"), CB.fmtTime],
      ["public_reply", CB.tr("case.result")]
    ]));
    if (c.dept_org_id) {
      var deptRow = CB.el("p", {class: "muted", "data-dept": c.dept_org_id}, CB.tr("case.dept") + "：…");
      box.appendChild(deptRow);
      CB.departments().then(function (ds) {
        var d = ds.filter(function (x) { return x.id === c.dept_org_id; })[0];
        deptRow.textContent = CB.tr("case.dept") + "：" + (d ? CB.name(d) : "#" + c.dept_org_id);
      });
    }
    var ph = photoList(c.photos);
    if (ph) box.appendChild(ph);
    (c.extensions || []).filter(function (x) { return x.status === "pending"; }).forEach(function (x) {
      box.appendChild(CB.el("p", {class: "notice", "data-extension": x.id}, CB.tr("act.request_extension") + "：" +
        x.extra_value + " " + x.extra_unit + " · " + x.reason));
    });
    var events = c.events || c.history || [];
    if (events.length) {
      box.appendChild(CB.el("h3", null, CB.tr("case.history")));
      box.appendChild(CB.el("ol", {class: "history"}, events.map(function (e) {
        return CB.el("li", null, CB.el("time", null, CB.fmtTime(e.at)), " ",
          CB.el("strong", null, CB.lang === "en" ? CB.tr("act." + e.action, e.action) : (e.action_name || CB.tr("act." + e.action, e.action))), " ",
          e.to_status ? "→ " + CB.status(e.to_status) + " " : "",
          CB.el("span", {class: "muted"}, (e.actor_name || e.actor || "") + (e.comment ? "：" + e.comment : "")),
          photoList(e.attachments));
      })));
    }
    (actions || []).forEach(function (a) { if (a) box.appendChild(a); });
  };

  /**
   * An action form: fields [{name, label, type: text|textarea|select|file|number, options, required}],
   * submit(values, form) -> Promise. Works from the keyboard (it is a real form).
   */
  CB.actionForm = function (spec) {
    var form = CB.el("form", {class: "panel action", "data-action": spec.action || ""});
    form.appendChild(CB.el("h3", null, spec.title));
    (spec.fields || []).forEach(function (f) {
      var ctl;
      if (f.type === "textarea") ctl = CB.el("textarea", {name: f.name, required: f.required, rows: 3});
      else if (f.type === "select") {
        ctl = CB.el("select", {name: f.name, required: f.required});
        (f.options || []).forEach(function (o) { ctl.appendChild(CB.el("option", {value: o.value, selected: o.selected}, o.label)); });
      } else if (f.type === "file") ctl = CB.el("input", {type: "file", name: f.name, accept: "image/*", multiple: true});
      else ctl = CB.el("input", {type: f.type || "text", name: f.name, required: f.required, value: f.value});
      form.appendChild(field(f.label, ctl));
      if (f.hint) form.appendChild(CB.el("p", {class: "hint"}, f.hint));
    });
    var buttons = CB.el("div", {class: "actions"});
    (spec.buttons || [{label: spec.title, value: spec.action, kind: ""}]).forEach(function (b) {
      buttons.appendChild(CB.el("button", {type: "submit", class: "btn " + (b.kind || ""), name: "_do", value: b.value || "", "data-do": b.value || ""}, b.label));
    });
    form.appendChild(buttons);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var which = ev.submitter ? ev.submitter.value : "";
      var values = CB.formJSON(form);
      delete values._do;
      CB.busy(form, true);
      Promise.resolve(spec.submit(values, form, which)).then(function () {
        CB.toast(CB.tr("common.ok"));
        if (spec.done) spec.done();
      }).catch(CB.fail).then(function () { CB.busy(form, false); });
    });
    return form;
  };

  /* Tabbed queues: tabs [{key, label, query | load()}]; detail(case) renders the chosen case. */
  CB.queues = function (opts) {
    var tabsBox = document.getElementById(opts.tabs), listBox = document.getElementById(opts.list);
    var detailBox = document.getElementById(opts.detail);
    var current = opts.tabs_def[0].key, buttons = {};
    tabsBox.setAttribute("role", "tablist");
    opts.tabs_def.forEach(function (t) {
      var b = CB.el("button", {type: "button", role: "tab", id: "tab-" + t.key, "aria-controls": opts.list, "data-tab": t.key},
        t.label, CB.el("span", {class: "count", "data-count": ""}, "·"));
      b.addEventListener("click", function () { select(t.key); });
      tabsBox.appendChild(b);
      buttons[t.key] = b;
    });
    function loadTab(t) {
      return t.load ? t.load() : CB.cases.list(t.query).then(function (page) {
        var items = CB.items(page);
        items.total = page.total !== undefined ? page.total : items.length;
        return items;
      });
    }
    function setCount(key, items) {
      var s = buttons[key].querySelector(".count");
      var n = items.total !== undefined ? items.total : items.length;
      s.textContent = n;
      s.dataset.count = String(n);
    }
    function counts() {
      opts.tabs_def.forEach(function (t) {
        loadTab(t).then(function (items) { setCount(t.key, items); }).catch(function () { /* shown when the tab is opened */ });
      });
    }
    function select(key) {
      current = key;
      Object.keys(buttons).forEach(function (k) { buttons[k].setAttribute("aria-selected", k === key ? "true" : "false"); });
      var t = opts.tabs_def.filter(function (x) { return x.key === key; })[0];
      listBox.innerHTML = "";
      listBox.appendChild(CB.el("p", {class: "muted"}, CB.tr("common.loading")));
      loadTab(t).then(function (items) {
        setCount(key, items);
        CB.caseTable(listBox, items, function (c) { show(c.id, t); }, t.table);
        listBox.dataset.loaded = key;
      }).catch(function (err) {
        listBox.innerHTML = "";
        listBox.appendChild(CB.el("p", {class: "notice err"}, err.message));
      });
    }
    function show(id, t) {
      detailBox.innerHTML = "";
      detailBox.appendChild(CB.el("p", {class: "muted"}, CB.tr("common.loading")));
      (t && t.get ? t.get(id) : CB.cases.get(id)).then(function (c) {
        opts.detail_fn(detailBox, c, t ? t.key : current, refresh);
        detailBox.dataset.caseId = c.id;
        var first = detailBox.querySelector("form textarea, form select, form input");
        if (first && opts.focus !== false) first.focus();
      }).catch(CB.fail);
    }
    function refresh() {
      detailBox.innerHTML = "";
      detailBox.appendChild(CB.el("p", {class: "muted"}, CB.tr("common.none")));
      select(current);
      counts();
    }
    select(current);
    counts();
    return {refresh: refresh, select: select, show: show};
  };
})();

/* Forms for workflow actions, by action code (see citybrain/cases/workflow.py). */
(function () {
  "use strict";
  var CB = window.CB;
  var deptCache = null;
  CB.departments = function () {
    if (!deptCache) {
      deptCache = CB.api("GET", "/api/v1/orgs", {query: {type: "department"}}).then(CB.items).catch(function () { return []; });
    }
    return deptCache;
  };
  var NEEDS_COMMENT = {reject: 1, answer: 1, "return": 1, handle: 1, rework: 1, suspend: 1, reopen: 1,
    request_extension: 1, refuse_extension: 1, supervise: 1, note: 1};
  var WITH_PHOTO = {handle: 1, verify: 1, rework: 1};
  var KIND = {reject: "danger", "return": "danger", rework: "danger", refuse_extension: "danger", verify: "ok", close: "ok"};

  /* One form per action code; `done` refreshes the page's queues. */
  CB.actionForms = function (c, codes, done) {
    var allowed = c.allowed_actions || c.actions;
    return codes.filter(function (code) { return !allowed || allowed.indexOf(code) >= 0; }).map(function (code) {
      var fields = [];
      if (code === "dispatch" || code === "file") {
        fields.push({name: "dept_org_id", label: CB.tr("case.dept"), type: "select", required: code === "dispatch",
          options: code === "file" ? [{value: "", label: CB.tr("desk.auto_dispatch")}] : []});
      }
      if (code === "request_extension") {
        fields.push({name: "extra_value", label: CB.tr("act.extra_days"), type: "number", value: "2", required: true});
      }
      if (WITH_PHOTO[code]) fields.push({name: "photo", label: CB.tr("common.photo"), type: "file"});
      fields.push({name: "comment", label: NEEDS_COMMENT[code] ? CB.tr("common.note") : CB.tr("common.note") + (CB.lang === "en" ? " (optional)" : "（可选）"),
        type: "textarea", required: !!NEEDS_COMMENT[code]});
      var form = CB.actionForm({
        action: code, title: CB.tr("act." + code), fields: fields,
        buttons: [{label: CB.tr("act." + code), value: code, kind: KIND[code]}],
        submit: function (values, formEl) {
          var body = {comment: values.comment || undefined};
          if (values.dept_org_id) body.dept_org_id = Number(values.dept_org_id);
          if (values.extra_value) { body.extra_value = Number(values.extra_value); body.extra_unit = "work_days"; }
          var input = formEl.querySelector("input[type=file]");
          return CB.uploadPhotos(input).then(function (refs) {
            if (refs.length) body.attachments = refs;
            return CB.cases.act(c.id, code, body);
          });
        },
        done: done
      });
      if (code === "dispatch" || code === "file") {
        var sel = form.querySelector("select[name=dept_org_id]");
        var suggestion = CB.can("case.dispatch") ?
          CB.api("GET", "/api/v1/web/dispatch-suggestion/" + c.id).catch(function () { return {}; }) : Promise.resolve({});
        Promise.all([CB.departments(), suggestion]).then(function (res) {
          var suggested = res[1].dept_org_id;
          res[0].forEach(function (d) {
            var isSugg = suggested !== null && suggested !== undefined && String(d.id) === String(suggested);
            sel.appendChild(CB.el("option", {value: d.id, selected: code === "dispatch" && isSugg, "data-suggested": isSugg ? "1" : null},
              CB.name(d) + (isSugg ? " ★ " + CB.tr("desk.suggested") : "")));
          });
          form.dataset.suggested = suggested === null || suggested === undefined ? "" : String(suggested);
        });
      }
      return form;
    });
  };
})();
