// Draws the charts of `moments report --format html` from the JSON in #report-data.
// Two charts per moment: entries, sends and control sends per day; the KPI of the
// treatment group against the control group with 95% intervals. When all are drawn,
// <body data-charts-rendered="N"> tells how many (headless tests read it).
(function () {
  "use strict";

  var report = JSON.parse(document.getElementById("report-data").textContent);
  var colour = { entries: "#64748b", sent: "#2563eb", control: "#f59e0b", ink: "#111827" };
  var months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  Chart.defaults.animation = false; // draw synchronously: the count below is then final
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.color = "#374151";
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  // `2026-11-05` as `Nov 5`.
  function shortDate(iso) {
    return months[Number(iso.slice(5, 7)) - 1] + " " + Number(iso.slice(8, 10));
  }

  function dailyChart(m) {
    var days = m.daily;
    var pick = function (key) { return days.map(function (d) { return d[key]; }); };
    return new Chart(document.getElementById("chart-daily-" + m.moment), {
      type: "bar",
      data: {
        labels: days.map(function (d) { return d.date; }),
        datasets: [
          { type: "line", label: "entries", data: pick("entries"), stack: "entries",
            borderColor: colour.entries, backgroundColor: colour.entries,
            borderWidth: 1.5, pointRadius: 0, order: 0 },
          { label: "sent", data: pick("sent"), stack: "sends", backgroundColor: colour.sent, order: 1 },
          { label: "control (held out)", data: pick("control"), stack: "sends",
            backgroundColor: colour.control, order: 1 }
        ]
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, grid: { display: false },
               ticks: { maxRotation: 0, autoSkipPadding: 16,
                        callback: function (v) { return shortDate(this.getLabelForValue(v)); } } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }
        },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }

  // Whiskers with caps over each bar: the 95% interval in `dataset.intervals[i]`.
  var intervals = {
    id: "intervals",
    afterDatasetsDraw: function (chart) {
      var ctx = chart.ctx, y = chart.scales.y;
      var spans = chart.data.datasets[0].intervals;
      ctx.save();
      ctx.strokeStyle = colour.ink;
      ctx.lineWidth = 1.5;
      chart.getDatasetMeta(0).data.forEach(function (bar, i) {
        if (!spans[i]) return;
        var top = y.getPixelForValue(spans[i][1]), bottom = y.getPixelForValue(spans[i][0]);
        var cap = Math.min(10, bar.width / 4);
        ctx.beginPath();
        ctx.moveTo(bar.x, top); ctx.lineTo(bar.x, bottom);
        ctx.moveTo(bar.x - cap, top); ctx.lineTo(bar.x + cap, top);
        ctx.moveTo(bar.x - cap, bottom); ctx.lineTo(bar.x + cap, bottom);
        ctx.stroke();
      });
      ctx.restore();
    }
  };

  function kpiChart(m) {
    var rate = m.function === "rate";
    var scale = function (x) { return x === null ? null : rate ? x * 100 : x; };
    var text = function (x) { return rate ? x.toFixed(1) + "%" : x.toFixed(2); };
    var groups = [
      { label: "treatment (sent)", value: m.value, low: m.ci_low, high: m.ci_high,
        measured: m.measured_sends, colour: colour.sent },
      { label: m.control_sends ? "control (held out)" : "no control group", value: m.control_value, low: m.control_ci_low,
        high: m.control_ci_high, measured: m.control_measured_sends, colour: colour.control }
    ];
    var spans = groups.map(function (g) {
      return g.low === null || g.high === null ? null : [scale(g.low), scale(g.high)];
    });
    var highest = Math.max.apply(null, spans.map(function (s) { return s ? s[1] : 0; }));
    return new Chart(document.getElementById("chart-kpi-" + m.moment), {
      type: "bar",
      data: {
        labels: groups.map(function (g) { return g.label; }),
        datasets: [{
          label: m.kpi,
          data: groups.map(function (g) { return scale(g.value); }),
          intervals: spans,
          backgroundColor: groups.map(function (g) { return g.colour + "b3"; }),
          borderColor: groups.map(function (g) { return g.colour; }),
          borderWidth: 1,
          barPercentage: 0.55
        }]
      },
      options: {
        scales: {
          x: { grid: { display: false } },
          y: { beginAtZero: true, suggestedMax: highest, max: rate && highest > 80 ? 100 : undefined,
               title: { display: true, text: rate ? "% of measured sends" : "mean " + m.unit },
               ticks: { callback: function (v) { return rate ? v + "%" : v; } } }
        },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (item) {
                var g = groups[item.dataIndex], s = spans[item.dataIndex];
                if (g.value === null) return "nothing measured yet";
                return text(scale(g.value)) + (s ? " (95%: " + text(s[0]) + " to " + text(s[1]) + ")" : "") +
                  ", " + g.measured + " sends measured";
              }
            }
          }
        }
      },
      plugins: [intervals]
    });
  }

  var drawn = 0;
  report.moments.forEach(function (m) {
    [dailyChart, kpiChart].forEach(function (draw) {
      try {
        draw(m);
        drawn += 1;
      } catch (e) {
        console.error("chart of " + m.moment + " not drawn:", e);
      }
    });
  });
  document.body.dataset.chartsRendered = String(drawn);

  // Charts follow their boxes; the printed page has other boxes.
  var resize = function () {
    Object.values(Chart.instances).forEach(function (c) { c.resize(); });
  };
  window.addEventListener("beforeprint", resize);
  window.addEventListener("afterprint", resize);
})();
