/* Login form: posts to /api/v1/auth/token (which sets the session cookie), then goes to `next`. */
(function () {
  var form = document.getElementById("login-form");
  var errBox = document.getElementById("login-error");
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    errBox.hidden = true;
    CB.busy(form, true);
    CB.api("POST", "/api/v1/auth/token", {form: new URLSearchParams(new FormData(form)), noRedirect: true})
      .then(function () { location.href = form.dataset.next || "/"; })
      .catch(function (err) {
        errBox.textContent = CB.tr("auth.failed") + "：" + err.message;
        errBox.hidden = false;
        CB.busy(form, false);
        document.getElementById("password").select();
      });
  });
})();
