// Neuron pages: a click on a point of the overlap scatter opens that neuron's permanent page.
// Points carry customdata [layer, index]; the page URL prefix comes from the plot div's data attributes.
(function () {
  "use strict";
  function neuronHref(el, layer, index) {
    var url = el.dataset.neuronBase + encodeURIComponent(layer) + "/" + encodeURIComponent(index);
    var params = new URLSearchParams(el.dataset.neuronQuery || "");
    var token = document.body.dataset.share;
    if (token) params.set("share", token);
    var q = params.toString();
    return q ? url + "?" + q : url;
  }
  function bind(tries) {
    var el = document.getElementById("plot-scatter");
    if (!el || el.dataset.clickBound) return;
    if (typeof el.on !== "function") {  // not drawn yet: renderPlots runs on DOMContentLoaded
      if (tries < 200) setTimeout(function () { bind(tries + 1); }, 50);
      return;
    }
    el.dataset.clickBound = "1";
    el.on("plotly_click", function (ev) {
      var pt = ev && ev.points && ev.points[0];
      if (!pt || !pt.customdata) return;
      var layer = Number(pt.customdata[0]), index = Number(pt.customdata[1]);
      if (!Number.isInteger(layer) || !Number.isInteger(index)) return;
      location.href = neuronHref(el, layer, index);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { bind(0); });
})();
