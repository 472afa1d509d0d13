// The run list: every run under the viewer's folder, sortable and filterable; two or more
// selected runs open side by side. A sweep folder shows its score tables and profiles above.
import {el, clear, num, tokens, dollars, duration, percent, when, pretty} from './util.js';
import {get, runPath} from './api.js';
import {profile} from './charts.js';

const COLUMNS = [
  ['name', 'run'], ['task', 'task'], ['team', 'team'], ['models', 'models'], ['status', 'status'],
  ['score', 'score'], ['baseline', 'baseline'], ['vs_baseline', 'vs baseline'], ['steps', 'steps'],
  ['tokens', 'tokens'], ['cost_usd', '$'], ['seconds', 'wall clock'], ['started', 'started'],
];

export class ListPage {
  constructor(main, info, setCrumbs) {
    this.main = main;
    this.info = info;
    this.sort = {key: 'started', dir: -1};
    this.filter = '';
    this.status = 'all';
    this.selected = new Set();
    this.rows = [];
    setCrumbs([['runs', null]]);
    clear(main);
    this.sweepBox = el('section', {class: 'sweep hidden'});
    this.controls = el('div', {class: 'controls'});
    this.table = el('table', {class: 'runs'});
    this.empty = el('p', {class: 'muted pad hidden'});
    main.append(this.sweepBox, this.controls, this.table, this.empty);
    this.drawControls();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), 3000);
    if (info.sweep) this.drawSweep();
  }

  destroy() { clearInterval(this.timer); }

  async refresh() {
    try {
      const r = await get('/api/runs');
      this.rows = r.runs;
      this.draw();
    } catch (e) {
      clear(this.table);
      this.empty.textContent = e.message;
      this.empty.classList.remove('hidden');
    }
  }

  drawControls() {
    const search = el('input', {type: 'search', placeholder: 'filter: task, team, model, status…', class: 'filter',
      value: this.filter, oninput: ev => { this.filter = ev.target.value.toLowerCase(); this.draw(); }});
    const status = el('select', {class: 'status-filter', onchange: ev => { this.status = ev.target.value; this.draw(); }},
      ['all', 'live', 'finished', 'stopped', 'interrupted'].map(s => el('option', {value: s}, s)));
    this.compareBtn = el('button', {class: 'compare', disabled: true, onclick: () => {
      location.hash = '#/compare/' + [...this.selected].map(encodeURIComponent).join(',');
    }}, 'Compare selected');
    this.countEl = el('span', {class: 'muted'});
    clear(this.controls).append(search, status, this.compareBtn, this.countEl);
  }

  visible() {
    const f = this.filter;
    return this.rows.filter(r => {
      if (this.status === 'live' && !r.live) return false;
      if (!['all', 'live'].includes(this.status) && r.status !== this.status) return false;
      if (!f) return true;
      return [r.name, r.task, r.team, r.method, r.status, r.exit_status, ...(r.models || [])]
        .some(v => String(v || '').toLowerCase().includes(f));
    }).sort((a, b) => {
      const k = this.sort.key;
      let x = a[k], y = b[k];
      if (Array.isArray(x)) { x = x.join(','); y = (y || []).join(','); }
      if (x == null && y == null) return 0;
      if (x == null) return 1;
      if (y == null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * this.sort.dir;
    });
  }

  draw() {
    const rows = this.visible();
    clear(this.table);
    const head = el('tr', {}, el('th', {}, ''));
    for (const [key, label] of COLUMNS) {
      const on = this.sort.key === key;
      head.append(el('th', {class: 'sortable' + (on ? ' on' : ''), dataset: {key},
        onclick: () => { this.sort = {key, dir: on ? -this.sort.dir : key === 'name' || key === 'task' ? 1 : -1}; this.draw(); }},
      label + (on ? (this.sort.dir > 0 ? ' ▲' : ' ▼') : '')));
    }
    this.table.append(el('thead', {}, head));
    const body = el('tbody');
    for (const r of rows) {
      const good = r.vs_baseline == null ? '' : r.vs_baseline > 0 ? 'good' : r.vs_baseline < 0 ? 'worse' : '';
      const check = el('input', {type: 'checkbox', checked: this.selected.has(r.name) || null, onchange: ev => {
        if (ev.target.checked) this.selected.add(r.name); else this.selected.delete(r.name);
        this.drawCount();
      }});
      body.append(el('tr', {class: r.live ? 'live' : null, dataset: {run: r.name}},
        el('td', {}, check),
        el('td', {class: 'name'}, el('a', {href: '#/run/' + encodeURIComponent(r.name)}, r.name),
          r.errors && r.errors.length ? el('span', {class: 'error', title: r.errors.join('\n')}, ' ⚠') : null),
        el('td', {}, r.task), el('td', {}, r.team), el('td', {class: 'models'}, (r.models || []).join(', ')),
        el('td', {}, el('span', {class: `badge st-${r.status}`}, r.status)),
        el('td', {class: 'num ' + good, title: r.final != null ? 'final submission' : 'best attempt'}, num(r.score, 5)),
        el('td', {class: 'num'}, num(r.baseline, 5)),
        el('td', {class: 'num ' + good}, percent(r.vs_baseline)),
        el('td', {class: 'num'}, num(r.steps)), el('td', {class: 'num'}, tokens(r.tokens)),
        el('td', {class: 'num'}, dollars(r.cost_usd)), el('td', {class: 'num'}, duration(r.seconds)),
        el('td', {class: 'num'}, when(r.started))));
    }
    this.table.append(body);
    this.empty.classList.toggle('hidden', rows.length > 0);
    this.empty.textContent = this.rows.length ? 'No run matches the filter.' : 'No runs in this folder yet.';
    this.drawCount(rows.length);
  }

  drawCount(shown) {
    for (const n of [...this.selected]) if (!this.rows.some(r => r.name === n)) this.selected.delete(n);
    this.compareBtn.disabled = this.selected.size < 2;
    this.compareBtn.textContent = `Compare selected (${this.selected.size})`;
    if (shown != null) this.countEl.textContent = `${shown} of ${this.rows.length} runs`;
  }

  async drawSweep() {
    const box = this.sweepBox;
    box.classList.remove('hidden');
    box.append(el('p', {class: 'muted'}, 'Loading the sweep…'));
    let s;
    try {
      s = await get('/api/sweep');
    } catch (e) {
      clear(box).append(el('p', {class: 'error'}, e.message));
      return;
    }
    clear(box).append(el('h2', {}, 'Sweep'));
    for (const e of s.errors) box.append(el('p', {class: 'error'}, e));
    if (s.sweep && typeof s.sweep === 'object') {
      const flat = Object.entries(s.sweep).filter(([, v]) => v == null || typeof v !== 'object');
      box.append(el('dl', {class: 'kv'}, flat.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, String(v))])));
      box.append(el('details', {class: 'sec'}, el('summary', {}, 'sweep.json'), pretty(s.sweep)));
    }
    const rep = s.report;
    if (!rep) { box.append(el('p', {class: 'muted'}, 'No finished runs to score yet.')); return; }
    box.append(el('p', {class: 'muted'}, `Scores: ${s.report_source}`));
    for (const note of rep.notes || []) box.append(el('p', {class: 'muted'}, 'note: ' + note));
    for (const [measure, byTask] of Object.entries(rep.scores || {})) {
      const methods = rep.methods || [];
      const t = el('table', {class: 'mini scores'}, el('tr', {}, el('th', {}, 'task'), el('th', {}, 'metric'),
        methods.map(m => el('th', {}, m))));
      for (const [task, row] of Object.entries(byTask)) {
        const info = (rep.tasks || {})[task] || {};
        t.append(el('tr', {}, el('td', {}, task), el('td', {}, `${info.metric || ''} (${info.direction || ''})`),
          methods.map(m => el('td', {class: 'num'}, num(row[m], 5) + ` (${((rep.runs || {})[task] || {})[m] || 0})`))));
      }
      box.append(el('h3', {}, measure.replace('_', ' ') + ' (runs)'), t);
    }
    const aup = el('table', {class: 'mini aup'}, el('tr', {}, el('th', {}, 'method'),
      Object.keys(rep.profiles || {}).map(m => el('th', {}, 'AUP ' + m.replace('_', ' ')))));
    for (const m of rep.methods || []) {
      aup.append(el('tr', {}, el('td', {}, m), Object.values(rep.profiles || {}).map(p => el('td', {class: 'num'}, num((p.aup || {})[m], 4)))));
    }
    box.append(el('h3', {}, 'AUP'), aup);
    const plots = el('div', {class: 'profiles'});
    for (const [measure, p] of Object.entries(rep.profiles || {})) {
      const c = el('div', {class: 'chart-box'}, el('h4', {}, 'Performance profile: ' + measure.replace('_', ' ')));
      profile(c, measure, p);
      plots.append(c);
    }
    box.append(plots);
    for (const img of s.images) {
      box.append(el('figure', {}, el('img', {src: '/api/sweep-image?name=' + encodeURIComponent(img), alt: img, class: 'plot'}),
        el('figcaption', {}, img)));
    }
  }
}
