// Records per second by severity, as stacked bars on a canvas.
//
// draw(canvas, rate) takes what /api/instances/NAME/rate answers:
// {start_ns, step_s, series: {severity: [records in each step, ...]}} and draws one
// bar per step, its height the step's records per second (count / step_s), the
// worst severity at the bottom. What was drawn is left on the canvas as
// data-points (steps), data-total (records counted) and data-peak (records/s).
"use strict";

(function () {
  const SEVERITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];
  const COLORS = {
    emerg: "#67001f",
    alert: "#980043",
    crit: "#ce1256",
    err: "#e7298a",
    warning: "#f1a340",
    notice: "#4393c3",
    info: "#2166ac",
    debug: "#999999",
  };
  const AXIS = "#555";
  const GRID = "#ddd";
  const FONT = "11px system-ui, sans-serif";

  function niceCeiling(value) {
    if (value <= 0) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * power >= value) return m * power;
    }
    return 10 * power;
  }

  function clock(ns) {
    const iso = new Date(Math.floor(ns / 1e6)).toISOString();
    return iso.slice(11, 19);
  }

  function formatRate(value) {
    if (value >= 10 || Number.isInteger(value)) return String(Math.round(value));
    return String(Number(value.toPrecision(2)));
  }

  function draw(canvas, rate) {
    const series = (rate && rate.series) || {};
    const step = Number(rate && rate.step_s) || 1;
    const start = Number(rate && rate.start_ns) || 0;
    let points = 0;
    for (const sev of SEVERITIES) {
      if (Array.isArray(series[sev])) points = Math.max(points, series[sev].length);
    }
    const perSecond = (sev, i) => (Number((series[sev] || [])[i]) || 0) / step;
    const stacked = new Array(points).fill(0);
    let total = 0;
    for (const sev of SEVERITIES) {
      const values = series[sev] || [];
      for (let i = 0; i < values.length; i++) {
        stacked[i] += perSecond(sev, i);
        total += Number(values[i]) || 0;
      }
    }
    const peak = stacked.reduce((a, b) => Math.max(a, b), 0);

    const ratio = window.devicePixelRatio || 1;
    const cssWidth = canvas.clientWidth || canvas.width;
    const cssHeight = canvas.clientHeight || canvas.height;
    canvas.width = Math.round(cssWidth * ratio);
    canvas.height = Math.round(cssHeight * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssWidth, cssHeight);
    ctx.font = FONT;

    const left = 44;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const width = Math.max(1, cssWidth - left - right);
    const height = Math.max(1, cssHeight - top - bottom);
    const yMax = niceCeiling(peak);

    ctx.strokeStyle = GRID;
    ctx.fillStyle = AXIS;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const fraction of [0, 0.5, 1]) {
      const y = Math.round(top + height - fraction * height) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
      ctx.fillText(formatRate(yMax * fraction), left - 6, y);
    }

    if (points > 0) {
      const barWidth = width / points;
      const gap = barWidth > 4 ? 1 : 0;
      for (let i = 0; i < points; i++) {
        let base = 0;
        for (const sev of SEVERITIES) {
          const v = perSecond(sev, i);
          if (v <= 0) continue;
          const y0 = top + height - (base / yMax) * height;
          const y1 = top + height - ((base + v) / yMax) * height;
          ctx.fillStyle = COLORS[sev];
          ctx.fillRect(left + i * barWidth, y1, Math.max(1, barWidth - gap), y0 - y1);
          base += v;
        }
      }
      ctx.fillStyle = AXIS;
      ctx.textBaseline = "top";
      ctx.textAlign = "left";
      ctx.fillText(clock(start), left, top + height + 4);
      ctx.textAlign = "right";
      ctx.fillText(clock(start + points * step * 1e9) + " UTC", left + width, top + height + 4);
    } else {
      ctx.fillStyle = AXIS;
      ctx.textAlign = "center";
      ctx.fillText("no records in this range", left + width / 2, top + height / 2);
    }

    canvas.dataset.points = String(points);
    canvas.dataset.total = String(total);
    canvas.dataset.peak = String(peak);
    canvas.setAttribute(
      "aria-label",
      `Records per second by severity over ${points} steps of ${step} s, ` +
        `peaking at ${formatRate(peak)} per second`,
    );
  }

  window.umonChart = { SEVERITIES, COLORS, draw };
})();
