// Two or more runs side by side: their figures in one table and their best score so far on
// one chart (each run's own baseline dashed).
import {el, clear, num, tokens, dollars, duration, percent, better} from './util.js';
import {get, runPath} from './api.js';
import {plot} from './charts.js';

const ROWS = [
  ['task', r => r.task], ['team', r => r.team], ['models', r => (r.models || []).join(', ')],
  ['status', r => r.status], ['exit status', r => r.exit_status], ['metric', r => r.metric],
  ['score', r => num(r.score, 5)], ['baseline', r => num(r.baseline, 5)], ['vs baseline', r => percent(r.vs_baseline)],
  ['steps', r => num(r.steps)], ['tokens', r => tokens(r.tokens)], ['dollars', r => dollars(r.cost_usd)],
  ['wall clock', r => duration(r.seconds)], ['validations', (r, o) => o ? String(o.scores.length) : '–'],
  ['agents', (r, o) => o ? Object.keys(o.agents).join(', ') : '–'],
];

export class ComparePage {
  constructor(main, names, setCrumbs) {
    setCrumbs([['runs', '#/'], [`compare ${names.length} runs`, null]]);
    clear(main).append(el('p', {class: 'muted pad'}, 'Loading…'));
    Promise.all(names.map(n => Promise.all([get(runPath('run', n)), get(runPath('overview', n))])))
      .then(all => this.draw(main, names, all))
      .catch(e => clear(main).append(el('p', {class: 'error pad'}, e.message)));
  }

  destroy() {}

  draw(main, names, all) {
    clear(main);
    main.append(el('h2', {class: 'pad'}, 'Compare runs'));
    const t = el('table', {class: 'mini compare'}, el('tr', {}, el('th', {}, ''), names.map((n, i) =>
      el('th', {}, el('i', {class: 'swatch c' + (i % 8)}), el('a', {href: '#/run/' + encodeURIComponent(n)}, n)))));
    for (const [label, f] of ROWS) {
      t.append(el('tr', {}, el('th', {}, label), all.map(([r, o]) => el('td', {}, f(r, o) ?? ''))));
    }
    main.append(el('div', {class: 'pad'}, t));
    const series = [], hlines = [], legend = [];
    all.forEach(([r, o], i) => {
      const m = r.metric || (o.info || {}).metric;
      const dir = r.direction || 'max';
      let best = null;
      const pts = [];
      for (const s of o.scores) {
        const v = (s.scores || {})[m];
        if (v == null) continue;
        if (best == null || better(v, best, dir)) best = v;
        pts.push([s.ts - o.first_ts, best]);
      }
      series.push({name: r.name, cls: 'c' + (i % 8), kind: 'step', points: pts, extendTo: o.last_ts - o.first_ts});
      if (r.baseline != null) hlines.push({y: r.baseline, cls: 'baseline c' + (i % 8)});
      legend.push(['c' + (i % 8), `${r.name}: best ${m} ${num(best, 5)}`]);
    });
    const box = el('div', {class: 'chart-box wide'});
    main.append(el('h3', {class: 'pad'}, 'Best score so far'), el('div', {class: 'pad'}, box));
    if (series.every(s => !s.points.length)) box.append(el('p', {class: 'muted'}, 'No scores yet.'));
    else plot(box, {width: 760, height: 260, x: {min: 0, label: 'time since start', fmt: v => duration(v).replace(' ', '')},
      y: {label: 'score'}, series, hlines, legend});
  }
}
