// Page behaviour for every page. Loaded as a file: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : "";
  }

  // Render every Plotly figure whose spec is embedded as a JSON data block.
  function renderPlots(root) {
    (root || document).querySelectorAll("[data-plot]").forEach(function (el) {
      var specEl = document.getElementById(el.dataset.plot);
      if (!specEl) return;
      var spec = JSON.parse(specEl.textContent);
      Plotly.react(el, spec.data, spec.layout || {}, {responsive: true, displaylogo: false});
      el.dataset.rendered = "1";
    });
  }
  window.renderPlots = renderPlots;

  // Every htmx request that changes something carries the CSRF token (double-submit cookie).
  document.addEventListener("htmx:configRequest", function (e) {
    var token = cookie("csrftoken");
    if (token) e.detail.headers["X-CSRFToken"] = token;
  });
  document.addEventListener("htmx:afterSwap", function (e) { renderPlots(e.target); });

  // Inside a shared (read-only) view, links keep carrying the share token.
  document.addEventListener("click", function (e) {
    var token = document.body.dataset.share, a = e.target.closest && e.target.closest("a[href^='/']");
    if (!token || !a) return;
    var u = new URL(a.href, location.origin);
    if (!u.searchParams.has("share")) { u.searchParams.set("share", token); a.href = u.pathname + u.search; }
  });

  // "Share this view": a read-only link to exactly this page and its URL state.
  function shareView() {
    var out = document.getElementById("share-url");
    fetch("/api/shares", {method: "POST", credentials: "same-origin",
                          headers: {"Content-Type": "application/json", "X-CSRFToken": cookie("csrftoken")},
                          body: JSON.stringify({target: location.pathname + location.search})})
      .then(function (r) { return r.json().then(function (b) { return {ok: r.ok, body: b}; }); })
      .then(function (res) {
        out.hidden = false;
        out.value = res.ok ? res.body.url : "could not share: " + (res.body.detail || "error");
        out.dataset.token = res.ok ? res.body.token : "";
        out.focus();
        out.select();
      })
      .catch(function (err) { out.hidden = false; out.value = "could not share: " + err; });
  }

  // A select that picks one of two exclusive fields clears the other (data-clears="<field name>").
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (el && el.dataset && el.dataset.clears && el.value && el.form) {
      var other = el.form.elements[el.dataset.clears];
      if (other) other.value = "";
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    renderPlots(document);
    var btn = document.getElementById("share-button");
    if (btn) btn.addEventListener("click", shareView);
    var out = document.getElementById("share-url");
    if (out) out.addEventListener("focus", function () { out.select(); });
  });
})();
