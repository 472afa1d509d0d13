// Small SVG charts: lines, steps and points on linear axes, and a communication graph.
import {svg, el, num} from './util.js';

function nice(lo, hi, count = 5) {
  // tick values covering [lo, hi] at a round step
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

// plot(container, spec): spec = {width, height, x: {label, min, max, fmt}, y: {...},
//   series: [{name, cls, kind: 'line'|'step'|'dots', points: [[x, y, meta]], onClick, title}],
//   hlines: [{y, cls, label}], legend: [[cls, text]]}
export function plot(container, spec) {
  const W = spec.width || 420, H = spec.height || 190;
  const m = {l: 52, r: 12, t: 18, b: 30};
  const xs = [], ys = [];
  for (const s of spec.series) for (const p of s.points) { xs.push(p[0]); ys.push(p[1]); }
  for (const h of spec.hlines || []) ys.push(h.y);
  const x0 = spec.x.min ?? Math.min(...xs, 0), x1 = spec.x.max ?? Math.max(...xs, x0 + 1);
  let y0 = spec.y.min ?? Math.min(...ys), y1 = spec.y.max ?? Math.max(...ys);
  if (!Number.isFinite(y0) || !Number.isFinite(y1)) { y0 = 0; y1 = 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  const pad = (y1 - y0) * 0.08;
  if (spec.y.min == null) y0 -= pad;
  if (spec.y.max == null) y1 += pad;
  const X = v => m.l + (v - x0) / ((x1 - x0) || 1) * (W - m.l - m.r);
  const Y = v => H - m.b - (v - y0) / ((y1 - y0) || 1) * (H - m.t - m.b);
  const root = svg('svg', {viewBox: `0 0 ${W} ${H}`, class: 'chart ' + (spec.cls || ''), role: 'img'});
  const fx = spec.x.fmt || num, fy = spec.y.fmt || num;
  for (const t of nice(y0, y1, 4)) {
    root.append(svg('line', {x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: 'grid'}));
    root.append(svg('text', {x: m.l - 4, y: Y(t) + 3, class: 'tick', 'text-anchor': 'end'}, fy(t)));
  }
  for (const t of nice(x0, x1, 5)) {
    root.append(svg('text', {x: X(t), y: H - m.b + 13, class: 'tick', 'text-anchor': 'middle'}, fx(t)));
  }
  root.append(svg('line', {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: 'axis'}));
  root.append(svg('line', {x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: 'axis'}));
  if (spec.x.label) root.append(svg('text', {x: W - m.r, y: H - 3, class: 'label', 'text-anchor': 'end'}, spec.x.label));
  if (spec.y.label) root.append(svg('text', {x: 4, y: 2, class: 'label', 'dominant-baseline': 'hanging'}, spec.y.label));
  for (const h of spec.hlines || []) {
    root.append(svg('line', {x1: m.l, x2: W - m.r, y1: Y(h.y), y2: Y(h.y), class: 'hline ' + (h.cls || '')}));
    if (h.label) root.append(svg('text', {x: W - m.r - 2, y: Y(h.y) - 3, class: 'hlabel ' + (h.cls || ''), 'text-anchor': 'end'}, h.label));
  }
  for (const s of spec.series) {
    if (!s.points.length) continue;
    if (s.kind === 'line' || s.kind === 'step') {
      let d = '';
      s.points.forEach((p, i) => {
        if (i === 0) d += `M${X(p[0])},${Y(p[1])}`;
        else if (s.kind === 'step') d += `H${X(p[0])}V${Y(p[1])}`;
        else d += `L${X(p[0])},${Y(p[1])}`;
      });
      if (s.kind === 'step' && s.extendTo != null) d += `H${X(s.extendTo)}`;
      root.append(svg('path', {d, class: 'series ' + (s.cls || '')}));
    } else {
      for (const p of s.points) {
        const shape = (p[2] && p[2].shape) || 'circle';
        const cx = X(p[0]), cy = Y(p[1]);
        const mark = shape === 'diamond'
          ? svg('path', {d: `M${cx},${cy - 6}L${cx + 6},${cy}L${cx},${cy + 6}L${cx - 6},${cy}Z`})
          : shape === 'cross'
            ? svg('path', {d: `M${cx - 4},${cy - 4}L${cx + 4},${cy + 4}M${cx - 4},${cy + 4}L${cx + 4},${cy - 4}`})
            : svg('circle', {cx, cy, r: 4});
        mark.setAttribute('class', 'pt ' + (s.cls || '') + ' ' + ((p[2] && p[2].cls) || ''));
        if (p[2] && p[2].title) mark.append(svg('title', {}, p[2].title));
        if (p[2] && p[2].seq != null) mark.dataset.seq = p[2].seq;
        if (s.onClick) mark.addEventListener('click', () => s.onClick(p));
        root.append(mark);
      }
    }
  }
  container.append(root);
  if (spec.legend && spec.legend.length) {
    container.append(el('div', {class: 'legend'}, spec.legend.map(([cls, text]) =>
      el('span', {class: 'key'}, el('i', {class: cls}), text))));
  }
  return root;
}

// graph(container, nodes, edges): nodes [name], edges [{from, to, count}] on a circle.
export function graph(container, nodes, edges) {
  const W = 420, H = 300, R = 110, cx = W / 2, cy = H / 2;
  const pos = new Map(nodes.map((n, i) => {
    const a = -Math.PI / 2 + 2 * Math.PI * i / Math.max(nodes.length, 1);
    return [n, [cx + R * Math.cos(a), cy + R * Math.sin(a)]];
  }));
  const max = Math.max(1, ...edges.map(e => e.count || 1));
  const root = svg('svg', {viewBox: `0 0 ${W} ${H}`, class: 'chart graph'});
  root.append(svg('defs', {}, svg('marker', {id: 'gh', viewBox: '0 0 10 10', refX: 22, refY: 5,
    markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse'}, svg('path', {d: 'M0,0L10,5L0,10Z', class: 'gh'}))));
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    // bend each direction of a pair its own way
    const mx = (a[0] + b[0]) / 2 + (b[1] - a[1]) * 0.12, my = (a[1] + b[1]) / 2 - (b[0] - a[0]) * 0.12;
    root.append(svg('path', {d: `M${a[0]},${a[1]}Q${mx},${my} ${b[0]},${b[1]}`, class: 'edge',
      'stroke-width': 1 + 4 * (e.count || 1) / max, 'marker-end': 'url(#gh)'},
      svg('title', {}, `${e.from} → ${e.to}: ${e.count ?? ''} messages` + (e.bytes != null ? `, ${e.bytes} bytes` : ''))));
    root.append(svg('text', {x: mx, y: my, class: 'elabel', 'text-anchor': 'middle'}, String(e.count ?? '')));
  }
  for (const n of nodes) {
    const [x, y] = pos.get(n);
    root.append(svg('circle', {cx: x, cy: y, r: 18, class: 'node'}));
    root.append(svg('text', {x, y: y + 32, class: 'nlabel', 'text-anchor': 'middle'}, n));
  }
  container.append(root);
  return root;
}

// profile(container, measure, report): performance profiles from `mlgym score`'s ratios:
// rho_m(tau) = share of tasks whose log10 ratio to the best method is <= tau.
export function profile(container, measure, p) {
  const tasks = Object.keys(p.ratios || {});
  if (!tasks.length) { container.append(el('p', {class: 'muted'}, 'No feasible scores for this measure.')); return; }
  const methods = Object.keys(p.ratios[tasks[0]]);
  const tmax = p.tau_max || 1;
  const series = methods.map((m, i) => {
    const logs = tasks.map(t => Math.log10(p.ratios[t][m])).sort((a, b) => a - b);
    const pts = [[0, logs.filter(v => v <= 1e-12).length / tasks.length]];
    logs.forEach((v, k) => { if (v > 1e-12) pts.push([v, (k + 1) / tasks.length]); });
    return {name: m, cls: 'c' + (i % 8), kind: 'step', points: pts, extendTo: tmax};
  });
  plot(container, {
    width: 460, height: 230, x: {min: 0, max: tmax, label: 'τ (log10 ratio to the best)'},
    y: {min: 0, max: 1.02, label: 'ρ(τ): share of tasks'}, series,
    legend: methods.map((m, i) => ['c' + (i % 8), `${m} (AUP ${num((p.aup || {})[m], 4)})`]),
  });
}
