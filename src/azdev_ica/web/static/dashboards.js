// Draws the dashboard charts with the vendored ECharts from each chart element's
// data-chart-data JSON (the CSP forbids inline scripts; nothing is fetched).
"use strict";
(function () {
  function bars(data) {
    var names = Object.keys(data.series);
    return {
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { data: names, top: 0 },
      grid: { left: 40, right: 10, top: 50, bottom: 30, containLabel: true },
      xAxis: { type: "category", data: data.categories },
      yAxis: { type: "value" },
      series: names.map(function (name) {
        return { name: name, type: "bar", data: data.series[name] };
      }),
    };
  }
  function overrides(data) {
    var series = [{ name: "Signed overrides", type: "bar", data: data.counts }];
    if (data.target !== null) {
      series.push({
        name: "Target",
        type: "line",
        data: data.categories.map(function () { return data.target; }),
      });
    }
    return {
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 40, right: 10, top: 50, bottom: 30, containLabel: true },
      xAxis: { type: "category", data: data.categories },
      yAxis: { type: "value", minInterval: 1 },
      series: series,
    };
  }
  var builders = { bars: bars, overrides: overrides };
  function draw() {
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      var build = builders[element.getAttribute("data-chart")];
      if (!build || typeof echarts === "undefined") { return; }
      var chart = echarts.init(element, null, { renderer: "svg" });
      chart.setOption(build(JSON.parse(element.getAttribute("data-chart-data"))));
      element.setAttribute("data-drawn", "true");
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
