// The plotly.js bundle dcc.Graph loads (dust/ui/bundles.py): the one the page's "dust-plotly" meta tag names,
// instead of the full bundle Dash sets; which one was loaded is kept in window.dustPlotlyBundle.
(function () {
  var dashDefault;
  Object.defineProperty(window, "_dashPlotlyJSURL", {
    configurable: true,
    set: function (url) {
      dashDefault = url;
    },
    get: function () {
      var meta = document.querySelector('meta[name="dust-plotly"]');
      window.dustPlotlyBundle = meta ? meta.getAttribute("data-bundle") : "full";
      return meta ? meta.getAttribute("content") : dashDefault;
    },
  });
})();
