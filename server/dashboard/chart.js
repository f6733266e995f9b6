"use strict";
// Line charts in SVG with real axes: "nice" ticks (1, 2 or 5 times a power of ten) on both
// axes with their labels, grid lines, axis titles with units, and a legend. No library: the
// dashboard needs lines over steps, and this is all of that.
const charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 480, H = 260;
  const M = {left: 62, right: 14, top: 30, bottom: 42};
  const COLORS = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e67700", "#0c8599", "#c2255c",
                  "#5c940d"];
  const MAX_POINTS = 2000;  // per line; more are thinned evenly, ends kept

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceStep(span, count) {
    const raw = span / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const n = raw / magnitude;
    return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * magnitude;
  }

  // Ticks covering [lo, hi]: {lo, hi, step, values}. A flat range is widened around its value
  // (not below zero when nothing is negative).
  function ticks(lo, hi, count) {
    if (!(hi > lo)) {
      const pad = Math.abs(lo) * 0.1 || 1;
      const nonNegative = lo >= 0;
      lo -= pad;
      hi += pad;
      if (nonNegative && lo < 0) lo = 0;
    }
    const step = niceStep(hi - lo, count);
    const start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
    const values = [];
    for (let i = 0; start + i * step <= end + step * 1e-9; i++) {
      values.push(Number((start + i * step).toPrecision(12)));
    }
    return {lo: start, hi: end, step, values};
  }

  // A tick label with as many decimals as the step needs; exponents for very small or large.
  function tickLabel(value, step) {
    if (value === 0) return "0";
    if (Math.abs(step) < 1e-3 || Math.abs(value) >= 1e6) return value.toExponential(1);
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return value.toFixed(decimals);
  }

  function thin(points) {
    if (points.length <= MAX_POINTS) return points;
    const out = [], stride = (points.length - 1) / (MAX_POINTS - 1);
    for (let i = 0; i < MAX_POINTS; i++) out.push(points[Math.round(i * stride)]);
    return out;
  }

  // spec: {series: [{label, points: [[x, y], ...], color?, dashed?}], xTitle, yTitle}
  function draw(svg, spec) {
    svg.replaceChildren();
    // JSON has no NaN: a diverged step's value comes as "NaN" or "Infinity" (common/json_number.h),
    // which has no place on an axis, so such points are left out.
    const series = spec.series
        .map((s) => ({...s, points: s.points.map((p) => [p[0], Number(p[1])])
                                          .filter((p) => Number.isFinite(p[1]))}))
        .filter((s) => s.points.length > 0);
    const all = series.flatMap((s) => s.points);
    if (all.length === 0) {
      svg.appendChild(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"},
                         "no steps yet"));
      return;
    }
    const xs = ticks(Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0])), 6);
    const ys = ticks(Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1])), 5);
    // Steps are whole numbers: no tick between two of them.
    if (xs.step < 1) Object.assign(xs, ticks(Math.floor(xs.lo), Math.ceil(xs.hi) + 1, 6));
    const sx = (x) => M.left + (x - xs.lo) / (xs.hi - xs.lo) * (W - M.left - M.right);
    const sy = (y) => H - M.bottom - (y - ys.lo) / (ys.hi - ys.lo) * (H - M.top - M.bottom);

    const axes = el("g", {class: "axes"});
    for (const v of ys.values) {
      axes.appendChild(el("line", {x1: M.left, x2: W - M.right, y1: sy(v), y2: sy(v),
                                   class: "grid"}));
      axes.appendChild(el("text", {x: M.left - 6, y: sy(v) + 4, "text-anchor": "end",
                                   class: "tick y"}, tickLabel(v, ys.step)));
    }
    for (const v of xs.values) {
      axes.appendChild(el("line", {x1: sx(v), x2: sx(v), y1: H - M.bottom, y2: H - M.bottom + 4,
                                   class: "tick-mark"}));
      axes.appendChild(el("text", {x: sx(v), y: H - M.bottom + 16, "text-anchor": "middle",
                                   class: "tick x"}, tickLabel(v, xs.step)));
    }
    axes.appendChild(el("line", {x1: M.left, x2: W - M.right, y1: H - M.bottom,
                                 y2: H - M.bottom, class: "axis"}));
    axes.appendChild(el("line", {x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom,
                                 class: "axis"}));
    axes.appendChild(el("text", {x: (M.left + W - M.right) / 2, y: H - 6, "text-anchor": "middle",
                                 class: "axis-title"}, spec.xTitle));
    axes.appendChild(el("text", {x: 14, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle",
                                 transform: `rotate(-90 14 ${(M.top + H - M.bottom) / 2})`,
                                 class: "axis-title"}, spec.yTitle));
    svg.appendChild(axes);

    let legendX = M.left;
    series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const points = thin(s.points);
      const dash = s.dashed ? {"stroke-dasharray": "5 3"} : {};
      if (points.length === 1) {
        svg.appendChild(el("circle", {cx: sx(points[0][0]), cy: sy(points[0][1]), r: 3,
                                      fill: color, class: "series"}));
      } else {
        svg.appendChild(el("polyline", {
          points: points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
          fill: "none", stroke: color, "stroke-width": 1.6, class: "series", ...dash}));
      }
      if (s.markers) {
        for (const p of points) {
          svg.appendChild(el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color}));
        }
      }
      svg.appendChild(el("line", {x1: legendX, x2: legendX + 16, y1: 12, y2: 12, stroke: color,
                                  "stroke-width": 2, ...dash}));
      const label = el("text", {x: legendX + 20, y: 16, class: "legend"}, s.label);
      svg.appendChild(label);
      legendX += 28 + 6.5 * s.label.length;
    });
  }

  return {draw, ticks, tickLabel};
})();
