// DOM and formatting helpers. Everything that came from a run (agent output, names, file
// contents) reaches the page as text nodes or attribute values, never as HTML.

export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.setAttribute('class', v);
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'style') Object.assign(e.style, v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
}

export function clear(e) {
  while (e.firstChild) e.removeChild(e.firstChild);
  return e;
}

export function num(x, digits = 4) {
  if (x == null || Number.isNaN(x)) return '–';
  if (typeof x !== 'number') return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return x.toLocaleString('en-US');
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

export function tokens(x) {
  if (x == null) return '–';
  if (x >= 1e6) return (x / 1e6).toFixed(2) + 'M';
  if (x >= 1e4) return (x / 1e3).toFixed(1) + 'k';
  return String(x);
}

export function dollars(x) {
  if (x == null) return '–';
  return '$' + (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(4));
}

export function duration(s) {
  if (s == null || Number.isNaN(s)) return '–';
  s = Math.max(0, s);
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  if (h) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
}

export function clock(s) {
  // +m:ss (or +h:mm:ss) since the run's start
  if (s == null) return '';
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return '+' + (h ? `${h}:${String(m).padStart(2, '0')}` : `${m}`) + ':' + String(sec).padStart(2, '0');
}

export function when(ts) {
  if (!ts) return '–';
  const d = new Date(ts * 1000);
  return d.toISOString().replace('T', ' ').slice(0, 16);
}

export function percent(f) {
  if (f == null) return '–';
  const p = f * 100;
  return (p > 0 ? '+' : '') + (Math.abs(p) >= 100 ? p.toFixed(0) : p.toFixed(1)) + '%';
}

export function better(a, b, direction) {
  if (a == null || b == null) return null;
  return direction === 'min' ? a < b : a > b;
}

export function pre(text, cls) {
  return el('pre', {class: cls || null}, text == null ? '' : String(text));
}

export function pretty(value) {
  return pre(JSON.stringify(value, null, 2), 'json');
}

export function firstKey(obj) {
  for (const k in obj || {}) return k;
  return null;
}
