// Page behaviour for every page. Loaded as a file: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : "";
  }

  // Render every Plotly figure whose spec is embedded as a JSON data block.
  function renderPlots(root) {
    root = root || document;
    var els = Array.prototype.slice.call(root.querySelectorAll("[data-plot]"));
    if (root.matches && root.matches("[data-plot]")) els.unshift(root);
    els.forEach(function (el) {
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
  // Draw swapped-in figures only once htmx has settled them. While settling, htmx gives a new element
  // the class and style of the old one with the same id (a replaced #plot-shift, say), then puts its
  // own back: a figure drawn before that loses Plotly's `js-plotly-plot` class, and with it the CSS
  // that stacks its SVG layers inside the box, so the layers spill over the controls below.
  document.addEventListener("htmx:afterSettle", function (e) { renderPlots(e.target); });
  // A figure that htmx removes gives back Plotly's resize listener and state.
  document.addEventListener("htmx:beforeCleanupElement", function (e) {
    var el = e.target;
    if (el && el.dataset && el.dataset.plot && el.classList.contains("js-plotly-plot")) Plotly.purge(el);
  });

  // One request per intent: a form does not send a request identical (same method, URL and fields)
  // to the one it still has in flight. Editing a field and clicking the form's button fires `change`
  // (on blur) and then `submit`: the second is the same request and is dropped, not sent to replace
  // the first (which the server would compute for nothing).
  var inFlight = new WeakMap();  // form -> {xhr, key} of its latest request
  function requestKey(form, verb, path) {
    return verb + " " + path + "?" + new URLSearchParams(new FormData(form)).toString();
  }
  document.addEventListener("htmx:confirm", function (e) {
    var d = e.detail, prev = d.elt && d.elt.tagName === "FORM" && inFlight.get(d.elt);
    var pending = prev && prev.xhr.readyState > 0 && prev.xhr.readyState < 4;  // opened, not done nor aborted
    if (pending && prev.key === requestKey(d.elt, d.verb, d.path)) e.preventDefault();
  });
  document.addEventListener("htmx:beforeSend", function (e) {
    var d = e.detail, cfg = d.requestConfig;
    if (d.elt && d.elt.tagName === "FORM" && d.xhr && cfg) {
      inFlight.set(d.elt, {xhr: d.xhr, key: requestKey(d.elt, cfg.verb, cfg.path)});
    }
  });

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
