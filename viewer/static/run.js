// A run's page: figures, the swimlane timeline (live while the run goes on), score and budget
// charts, artefacts, configuration, result and analysis.
import {el, clear, num, tokens, dollars, duration, percent, pretty, better, when, firstKey} from './util.js';
import {get, runPath} from './api.js';
import {Timeline} from './timeline.js';
import {renderDetail, artefactView} from './detail.js';
import {plot, graph} from './charts.js';
import {LiveFeed} from './live.js';
import {stats} from './stats.js';

const TABS = ['timeline', 'artefacts', 'config', 'analysis', 'files'];

export class RunPage {
  constructor(main, name, setCrumbs) {
    this.main = main;
    this.name = name;
    this.turns = [];
    this.scores = [];
    this.series = [];
    this.overview = null;
    this.tab = 'timeline';
    stats.reset();
    setCrumbs([['runs', '#/'], [name, null]]);
    this.onKey = ev => this.key(ev);
    document.addEventListener('keydown', this.onKey);
    this.load();
  }

  destroy() {
    document.removeEventListener('keydown', this.onKey);
    if (this.feed) this.feed.close();
    if (this.tl) this.tl.destroy();
    clearInterval(this.tick);
    clearTimeout(this.sideTimer);
  }

  async load() {
    let meta;
    try {
      meta = await get(runPath('run', this.name));
    } catch (e) {
      clear(this.main).append(el('p', {class: 'error pad'}, e.message));
      return;
    }
    this.meta = meta;
    clear(this.main);
    this.header = el('section', {class: 'run-head'});
    this.tabsEl = el('nav', {class: 'tabs'});
    this.body = el('section', {class: 'run-body'});
    this.main.append(this.header, this.tabsEl, this.body);
    this.drawHeader();
    this.tlBox = el('div', {class: 'tl'});
    this.side = el('aside', {class: 'side'});
    this.tlPane = el('div', {class: 'pane timeline-pane'}, this.tlBox, this.side);
    this.otherPane = el('div', {class: 'pane other-pane hidden'});
    this.body.append(this.tlPane, this.otherPane);
    this.drawTabs();
    const firstTs = meta.started || 0;
    this.tl = new Timeline(this.tlBox, {
      name: this.name, first: meta.first, head: meta.head, t0: firstTs,
      lanes: this.lanesOf(meta),
      metric: () => this.metric(),
      onToggle: seq => { this.tl.select(seq, false); this.tl.toggle(seq); },
      onFollow: seq => this.followFrom(seq),
      onDetail: (s, box) => renderDetail(box, this.name, s, {
        run: this.name, metric: () => this.metric(), goto: x => this.goto(x)}),
      onError: e => this.flash(e.message),
    });
    this.tl.renderHooks.push(shown => stats.onRendered(shown, this.tl.head));
    if (meta.live) this.tl.jumpLast();  // a live run opens on its newest events, following them
    else this.tl.schedule();
    this.feed = new LiveFeed(this.name, meta.head, list => this.live(list), state => this.liveState(state));
    // the overview (every turn and score, budgets) and the live stream need the whole log read:
    // asked for once the first rows are on screen, so that they do not compete with them
    const asked = performance.now();
    const whenPainted = () => {
      if (stats.firstPaint == null && meta.head && performance.now() - asked < 3000) return setTimeout(whenPainted, 20);
      this.feed.open();
      this.loadOverview();
    };
    whenPainted();
    // figures tick every second; a live run's overview (agents, budgets, run info) is
    // refreshed every few seconds, the timeline itself follows every event
    let n = 0;
    this.tick = setInterval(() => {
      this.drawFigures();
      if (this.meta.live && ++n % 3 === 0) {
        this.refreshMeta();  // run.json says when the run is over (after its run_end event)
        if (!this.loadingOverview) this.loadOverview();
      }
    }, 1000);
  }

  lanesOf(meta) {
    return meta.lanes || [];
  }

  metric() {
    const info = (this.overview && this.overview.info) || {};
    const name = this.meta.metric || info.metric || (this.scores[0] && firstKey(this.scores[0].scores));
    return name ? {name, direction: this.meta.direction || (info.directions || {})[name] || 'max'} : null;
  }

  async loadOverview() {
    this.loadingOverview = true;
    try {
      const o = await get(runPath('overview', this.name));
      this.overview = o;
      // live events that came in meanwhile are already in the lists; keep those after o.head
      const extraTurns = this.turns.filter(s => s > o.head), extraScores = this.scores.filter(s => s.seq > o.head);
      const extraSeries = this.series.filter(p => p[4] > o.head);
      this.turns = o.turns.concat(extraTurns);
      this.scores = o.scores.concat(extraScores);
      this.series = o.series.map(p => [...p, 0]).concat(extraSeries);
      for (const l of o.lanes) this.tl.addLane(l.name, l.role);
      if (o.epochs.length > 1) this.tl.setEpochs(o.epochs);
      if (o.first_ts && this.tl.t0 !== o.first_ts) { this.tl.t0 = o.first_ts; this.tl.rebuild(); }
      this.t0 = o.first_ts;
      stats.overviewAt = performance.now();
      this.drawSide();
      this.drawFigures();
    } catch (e) {
      this.flash(`overview: ${e.message}`);
    } finally {
      this.loadingOverview = false;
    }
  }

  // ---------------------------------------------------------------- live

  live(list) {
    for (const s of list) {
      if (s.kind === 'agent_step') this.turns.push(s.seq);
      if (s.kind === 'score_event') this.scores.push({seq: s.seq, ts: s.ts, step: s.step, action: s.action,
        scores: s.scores || {}, error: s.error || '', agent: '', artefact: s.art || ''});
      if (s.tot) this.series.push([s.ts, ...s.tot, s.seq]);
      if (s.kind === 'run_end' || s.kind === 'run_info') { this.refreshMeta(); this.loadOverview(); }
      if (this.overview) this.overview.last_ts = Math.max(this.overview.last_ts || 0, s.ts);
    }
    this.tl.addLive(list);
    this.sideDirty = true;
    if (!this.sideTimer) this.sideTimer = setTimeout(() => { this.sideTimer = null; this.drawSide(); }, 500);
  }

  liveState(state) {
    this.liveText = state;
    this.drawFigures();
  }

  async refreshMeta() {
    try {
      const meta = await get(runPath('run', this.name));
      Object.assign(this.meta, meta);
      this.drawHeader();
    } catch (e) { /* the next event tries again */ }
  }

  // ---------------------------------------------------------------- header

  drawHeader() {
    const m = this.meta;
    clear(this.header);
    const status = el('span', {class: `badge st-${m.status}`}, m.status + (m.live ? ' · live' : ''));
    this.header.append(el('div', {class: 'title'}, el('h1', {}, m.run_id || this.name), status,
      m.exit_status ? el('span', {class: 'muted'}, m.exit_status) : null));
    this.figs = el('div', {class: 'figs'});
    this.header.append(this.figs);
    for (const e of m.errors || []) this.header.append(el('p', {class: 'error'}, e));
    this.drawFigures();
  }

  drawFigures() {
    if (!this.figs) return;
    const m = this.meta, o = this.overview, tot = (o && o.totals) || {};
    const metric = this.metric();
    const best = this.scores.length ? bestOf(this.scores, metric) : m.best;
    const score = m.final != null ? m.final : best;
    const base = m.baseline != null ? m.baseline : metric && o && (o.info.baseline || {})[metric.name];
    const last = this.series[this.series.length - 1];
    const steps = last ? last[1] : tot.steps ?? m.steps, tok = last ? last[2] : tot.tokens ?? m.tokens;
    const usd = last ? last[3] : tot.cost_usd ?? m.cost_usd;
    const start = (o && o.first_ts) || m.started;
    const wall = m.live && start ? Date.now() / 1000 - start : m.seconds;
    const good = better(score, base, metric && metric.direction);
    const budget = (o && o.info && o.info.budget) || {};
    const fig = (label, value, limit, cls) => el('div', {class: 'fig ' + (cls || '')}, el('span', {class: 'lbl'}, label),
      el('b', {}, value), limit ? el('span', {class: 'lim'}, ' / ' + limit) : null);
    clear(this.figs).append(
      fig('task', m.task || '–'), fig('team', m.team || '–'), fig('models', (m.models || []).join(', ') || '–'),
      fig(metric ? metric.name + (m.final != null ? ' (submitted)' : ' (best)') : 'score', num(score, 5),
        null, good == null ? '' : good ? 'good' : 'worse'),
      fig('baseline', num(base, 5), null), fig('vs baseline', percent(relative(score, base, metric)), null,
        good == null ? '' : good ? 'good' : 'worse'),
      fig('steps', num(steps), budget.steps ? num(budget.steps) : null),
      fig('tokens', tokens(tok), budget.tokens ? tokens(budget.tokens) : null),
      fig('dollars', dollars(usd), budget.dollars ? dollars(budget.dollars) : null),
      fig('wall clock', duration(wall), budget.wall_clock_s ? duration(budget.wall_clock_s) : null),
      fig('events', num(this.tl ? this.tl.head : m.head), null),
      this.liveText ? fig('live', this.liveText, null, 'live-' + this.liveText.split(' ')[0]) : null,
    );
  }

  // ---------------------------------------------------------------- side: charts, agents

  drawSide() {
    if (!this.side) return;
    clear(this.side);
    const o = this.overview;
    const metric = this.metric();
    const t0 = (o && o.first_ts) || this.tl.t0;
    this.side.append(el('h3', {}, `Score over time${metric ? ' · ' + metric.name : ''}`));
    const sc = el('div', {class: 'chart-box score-chart'});
    this.side.append(sc);
    const base = metric && o ? (o.info.baseline || {})[metric.name] ?? this.meta.baseline : this.meta.baseline;
    const pts = this.scores.filter(s => metric && s.scores[metric.name] != null);
    if (!pts.length && base == null) {
      sc.append(el('p', {class: 'muted'}, 'No validation yet.'));
    } else {
      let bestSoFar = null;
      const bestLine = [];
      for (const s of pts) {
        const v = s.scores[metric.name];
        if (bestSoFar == null || better(v, bestSoFar, metric.direction)) bestSoFar = v;
        bestLine.push([s.ts - t0, bestSoFar]);
      }
      const now = (o && this.meta.live) ? Date.now() / 1000 - t0 : ((o && o.last_ts) || t0) - t0;
      const failed = this.scores.filter(s => !metric || s.scores[metric.name] == null);
      const lo = pts.length ? Math.min(...pts.map(s => s.scores[metric.name])) : base;
      plot(sc, {
        x: {min: 0, max: Math.max(now, 1), fmt: v => duration(v).replace(' ', ''), label: 'time'},
        y: {label: metric ? metric.name : ''},
        series: [
          {name: 'best', cls: 'best', kind: 'step', points: bestLine, extendTo: Math.max(now, 1)},
          {name: 'scores', cls: 'score', kind: 'dots', onClick: p => this.goto(p[2].seq),
            points: pts.map(s => [s.ts - t0, s.scores[metric.name], {seq: s.seq,
              shape: s.action === 'validate' ? 'circle' : 'diamond',
              cls: better(s.scores[metric.name], base, metric.direction) === false ? 'worse' : 'good',
              title: `#${s.seq} ${s.action} at step ${s.step}: ${num(s.scores[metric.name], 6)}`}])},
          {name: 'failed', cls: 'failed', kind: 'dots', onClick: p => this.goto(p[2].seq),
            points: failed.map(s => [s.ts - t0, lo ?? 0, {seq: s.seq, shape: 'cross', title: `#${s.seq} ${s.action} failed: ${s.error}`}])},
        ],
        hlines: base != null ? [{y: base, cls: 'baseline', label: `baseline ${num(base, 5)}`}] : [],
        legend: [['best', 'best so far'], ['score', 'validate ●  submit ◆'], ['baseline', 'baseline']],
      });
    }
    this.side.append(el('h3', {}, 'Budgets used'));
    const bc = el('div', {class: 'chart-box budget-chart'});
    this.side.append(bc);
    this.drawBudget(bc, t0);
    this.side.append(el('h3', {}, 'Agents'));
    this.side.append(this.agentsTable());
    this.side.append(el('h3', {}, 'Keys'));
    this.side.append(el('p', {class: 'keys muted'},
      'j/k next/previous turn · n/p next/previous score · ↓/↑ next/previous event · Enter expand · ' +
      'f follow the arrow · g/G first/last · / find (Enter: next match)'));
  }

  drawBudget(box, t0) {
    const o = this.overview;
    const limits = (o && o.info && o.info.budget) || {};
    const series = this.series;
    const dims = [['steps', 1, 'c0'], ['tokens', 2, 'c1'], ['dollars', 3, 'c2']];
    const lines = [], legend = [];
    const last = series[series.length - 1] || [t0, 0, 0, 0];
    for (const [name, i, cls] of dims) {
      const limit = limits[name];
      if (!limit) { legend.push([cls + ' off', `${name} ${name === 'dollars' ? dollars(last[i]) : num(last[i])} (no limit)`]); continue; }
      lines.push({name, cls, kind: 'step', points: [[0, 0], ...series.map(p => [p[0] - t0, 100 * p[i] / limit])],
        extendTo: Math.max(1, (o ? (this.meta.live ? Date.now() / 1000 : o.last_ts) : t0) - t0)});
      legend.push([cls, `${name} ${name === 'dollars' ? dollars(last[i]) : num(last[i])} / ${name === 'dollars' ? dollars(limit) : num(limit)}`]);
    }
    const end = Math.max(1, (o ? (this.meta.live ? Date.now() / 1000 : o.last_ts) : t0) - t0);
    if (limits.wall_clock_s) {
      lines.push({name: 'wall', cls: 'c3', kind: 'line', points: [[0, 0], [end, 100 * end / limits.wall_clock_s]]});
      legend.push(['c3', `wall clock ${duration(end)} / ${duration(limits.wall_clock_s)}`]);
    }
    if (!lines.length) {
      box.append(el('p', {class: 'muted'}, 'This run has no budget limits.'));
      box.append(el('div', {class: 'legend'}, legend.map(([c, t]) => el('span', {class: 'key'}, el('i', {class: c}), t))));
      return;
    }
    plot(box, {x: {min: 0, max: end, fmt: v => duration(v).replace(' ', ''), label: 'time'},
      y: {min: 0, label: '% of budget', fmt: v => v + '%'}, series: lines,
      hlines: [{y: 100, cls: 'limit', label: 'limit'}], legend});
  }

  agentsTable() {
    const o = this.overview;
    const agents = (o && o.agents) || {};
    const budgets = (o && o.info && o.info.agent_budgets) || {};
    const t = el('table', {class: 'mini agents'}, el('tr', {}, ['agent', 'role', 'state', 'turns', 'env steps', 'tokens', '$']
      .map(h => el('th', {}, h))));
    const order = name => { const i = this.tl.laneIndex.get(name); return i == null ? 1e9 : i; };
    for (const [name, a] of Object.entries(agents).sort((x, y) => order(x[0]) - order(y[0]))) {
      const b = budgets[name] || {};
      t.append(el('tr', {}, el('td', {}, name), el('td', {}, a.role), el('td', {class: 'state-' + a.state, title: a.detail}, a.state),
        el('td', {}, num(a.turns)), el('td', {}, num(a.env_steps) + (b.steps ? ` / ${b.steps}` : '')),
        el('td', {}, tokens(a.tokens) + (b.tokens ? ` / ${tokens(b.tokens)}` : '')),
        el('td', {}, dollars(a.cost_usd) + (b.dollars ? ` / ${dollars(b.dollars)}` : ''))));
    }
    return t;
  }

  // ---------------------------------------------------------------- tabs

  drawTabs() {
    clear(this.tabsEl);
    for (const t of TABS) {
      if (t === 'analysis' && !(this.meta.files || {}).analysis) continue;
      this.tabsEl.append(el('a', {href: '#', class: 'tab' + (t === this.tab ? ' on' : ''), dataset: {tab: t},
        onclick: ev => { ev.preventDefault(); this.show(t); }}, t));
    }
    if (!this.searchBox) {
      this.searchInfo = el('span', {class: 'muted search-info'});
      this.searchBox = el('input', {type: 'search', class: 'search', placeholder: 'find in titles (/)',
        onkeydown: ev => {
          if (ev.key === 'Enter') { ev.preventDefault(); this.find(ev.target.value); }
          if (ev.key === 'Escape') { ev.target.blur(); this.tl.scroll.focus(); }
        }});
    }
    this.tabsEl.append(el('span', {class: 'search-wrap'}, this.searchInfo, this.searchBox));
  }

  async find(text) {
    if (!text) return;
    if (this.tab !== 'timeline') this.show('timeline');
    try {
      const r = await get(runPath('search', this.name), {q: text, after: this.tl.selected ?? 0, limit: 1});
      if (!r.seqs.length) { this.searchInfo.textContent = 'no match'; return; }
      this.searchInfo.textContent = `${r.total} match${r.total === 1 ? '' : 'es'}`;
      this.goto(r.seqs[0]);
    } catch (e) {
      this.flash(e.message);
    }
  }

  show(tab) {
    this.tab = tab;
    this.drawTabs();
    this.tlPane.classList.toggle('hidden', tab !== 'timeline');
    this.otherPane.classList.toggle('hidden', tab === 'timeline');
    if (tab === 'timeline') { this.tl.schedule(); return; }
    clear(this.otherPane).append(el('p', {class: 'muted'}, 'Loading…'));
    const draw = {artefacts: () => this.drawArtefacts(), config: () => this.drawConfig(),
      analysis: () => this.drawAnalysis(), files: () => this.drawFiles()}[tab];
    draw().catch(e => clear(this.otherPane).append(el('p', {class: 'error'}, e.message)));
  }

  async drawArtefacts() {
    const {labels} = await get(runPath('artefacts', this.name));
    const pane = clear(this.otherPane);
    if (!labels.length) { pane.append(el('p', {class: 'muted'}, 'This run kept no artefact copies (artefacts/).')); return; }
    const list = el('ul', {class: 'labels'}), view = el('div', {class: 'artefact'});
    const scoreOf = label => this.scores.find(s => s.artefact === label);
    const pick = label => {
      for (const li of list.children) li.classList.toggle('on', li.dataset.label === label);
      artefactView(view, this.name, label);
    };
    for (const l of labels) {
      const s = scoreOf(l), m = this.metric();
      list.append(el('li', {dataset: {label: l}, onclick: () => pick(l)}, l,
        s && m ? el('span', {class: 'muted'}, ` ${m.name} ${num(s.scores[m.name], 5)}`) : null));
    }
    pane.append(el('div', {class: 'split'}, list, view));
    const steps = labels.filter(l => l.startsWith('step-'));
    pick(steps[steps.length - 1] || labels[0]);
  }

  async drawConfig() {
    const c = await get(runPath('config', this.name));
    const pane = clear(this.otherPane);
    for (const e of c.errors) pane.append(el('p', {class: 'error'}, e));
    const run = c.run || {}, team = run.team || {};
    if (team.agents) {
      pane.append(el('h3', {}, `Team ${team.name || ''}`), el('p', {class: 'muted'}, team.description || ''));
      const t = el('table', {class: 'mini'}, el('tr', {}, ['agent', 'role', 'model', 'history', 'budget'].map(h => el('th', {}, h))));
      for (const a of team.agents) t.append(el('tr', {}, el('td', {}, a.name), el('td', {}, a.role), el('td', {}, a.model),
        el('td', {}, a.history || ''), el('td', {}, JSON.stringify(a.budget || {}))));
      pane.append(t, el('p', {}, 'Run budget: ', JSON.stringify(team.budget || {})));
    }
    const r = c.result;
    if (r) {
      pane.append(el('h3', {}, 'Result'));
      const t = el('table', {class: 'mini'}, el('tr', {}, ['step', 'action', 'scores', 'error'].map(h => el('th', {}, h))));
      for (const a of r.attempts || []) t.append(el('tr', {}, el('td', {}, a.step), el('td', {}, a.action),
        el('td', {}, JSON.stringify(a.scores || null)), el('td', {}, a.error ? a.error.message : '')));
      pane.append(t, el('p', {}, `exit status: ${r.exit_status}; final submission: ${JSON.stringify(r.final_submission)}`));
    }
    pane.append(el('h3', {}, 'run.json'), c.run ? pretty(c.run) : el('p', {class: 'muted'}, 'missing'));
    pane.append(el('h3', {}, 'result.json'), c.result ? pretty(c.result) : el('p', {class: 'muted'}, 'not written yet'));
  }

  async drawAnalysis() {
    const a = await get(runPath('analysis', this.name));
    const pane = clear(this.otherPane);
    for (const e of a.errors) pane.append(el('p', {class: 'error'}, e));
    if (!a.present) { pane.append(el('p', {class: 'muted'}, 'No analysis/ folder (`mlgym analyze` writes one).')); return; }
    for (const [file, data] of Object.entries(a.data)) {
      pane.append(el('h3', {}, file));
      if (data && typeof data === 'object') analysisBlocks(pane, data);
      else pane.append(pretty(data));
    }
    for (const img of a.images) {
      const url = runPath('image', this.name) + '?name=' + encodeURIComponent(img);
      pane.append(el('figure', {}, el('img', {src: url, alt: img, class: 'plot'}), el('figcaption', {}, img)));
    }
  }

  async drawFiles() {
    const meta = await get(runPath('run', this.name));
    const pane = clear(this.otherPane);
    const link = name => el('li', {}, el('a', {href: runPath('file', this.name) + '?name=' + encodeURIComponent(name),
      target: '_blank', rel: 'noopener'}, name));
    pane.append(el('h3', {}, 'Files'), el('ul', {}, ['run.json', 'result.json'].map(link)));
    pane.append(el('h3', {}, 'Trajectories (MLGym .traj, written when the run ends)'));
    const trajs = (meta.files || {}).trajectories || [];
    pane.append(trajs.length ? el('ul', {}, trajs.map(t => link('trajectories/' + t))) : el('p', {class: 'muted'}, 'none yet'));
    pane.append(el('h3', {}, 'Logs'), el('ul', {}, ((meta.files || {}).logs || []).map(link)));
  }

  // ---------------------------------------------------------------- navigation

  goto(seq) {
    if (this.tab !== 'timeline') this.show('timeline');
    this.tl.select(seq);
  }

  async followFrom(seq) {
    this.tl.select(seq, false);
    try {
      const r = await get(runPath('follow', this.name), {seq});
      const others = r.linked.filter(x => x !== seq);
      if (!others.length) { this.flash('nothing linked to this event yet'); return; }
      const next = others.find(x => x > seq) ?? others[0];
      this.goto(next);
    } catch (e) {
      this.flash(e.message);
    }
  }

  neighbour(list, dir) {
    const cur = this.tl.selected ?? (dir > 0 ? this.tl.visibleSeq() - 1 : this.tl.visibleSeq() + 1);
    if (dir > 0) return list.find(s => s > cur);
    for (let i = list.length - 1; i >= 0; i--) if (list[i] < cur) return list[i];
    return undefined;
  }

  key(ev) {
    if (this.tab !== 'timeline' || ev.target.closest('input, textarea, select') || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const tl = this.tl, sel = tl.selected ?? tl.visibleSeq();
    const scoreSeqs = this.scores.map(s => s.seq);
    const act = {
      j: () => this.goto(this.neighbour(this.turns, 1)), k: () => this.goto(this.neighbour(this.turns, -1)),
      n: () => this.goto(this.neighbour(scoreSeqs, 1)), p: () => this.goto(this.neighbour(scoreSeqs, -1)),
      ArrowDown: () => this.goto(Math.min(tl.head, sel + (tl.selected == null ? 0 : 1))),
      ArrowUp: () => this.goto(Math.max(tl.first, sel - 1)),
      Enter: () => tl.selected != null && tl.toggle(tl.selected), o: () => tl.selected != null && tl.toggle(tl.selected),
      f: () => tl.selected != null && this.followFrom(tl.selected),
      g: () => tl.jumpFirst(), Home: () => tl.jumpFirst(), G: () => tl.jumpLast(), End: () => tl.jumpLast(),
      Escape: () => tl.collapseAll(),
      '/': () => this.searchBox.focus(),
    }[ev.key];
    if (!act) return;
    ev.preventDefault();
    if (['G', 'End'].includes(ev.key)) stats.keyAt = performance.now();
    act();
  }

  flash(text) {
    const f = el('div', {class: 'flash'}, text);
    document.body.append(f);
    setTimeout(() => f.remove(), 3000);
  }
}

function bestOf(scores, metric) {
  if (!metric) return null;
  let best = null;
  for (const s of scores) {
    const v = s.scores[metric.name];
    if (v != null && (best == null || better(v, best, metric.direction))) best = v;
  }
  return best;
}

function relative(score, base, metric) {
  if (score == null || base == null || !base) return null;
  return (metric && metric.direction === 'min' ? base - score : score - base) / Math.abs(base);
}

// `mlgym analyze` output: a per-member table (`members`), a communication graph (`graph`),
// anything else as its fields (docs/viewer.md).
export function analysisBlocks(pane, data) {
  const members = data.members;
  if (members && typeof members === 'object') {
    const rows = Array.isArray(members) ? members.map(m => [m.name ?? m.member ?? '?', m]) : Object.entries(members);
    const cols = [...new Set(rows.flatMap(([, m]) => Object.keys(m || {}).filter(k => k !== 'name' && k !== 'member')))];
    const t = el('table', {class: 'mini members'}, el('tr', {}, el('th', {}, 'member'), cols.map(c => el('th', {}, c))));
    for (const [name, m] of rows) t.append(el('tr', {}, el('td', {}, name), cols.map(c => {
      const v = (m || {})[c];
      return el('td', {}, typeof v === 'number' ? num(v, 5) : typeof v === 'object' && v != null ? JSON.stringify(v) : (v ?? ''));
    })));
    pane.append(el('h4', {}, 'Per member'), t);
  }
  const g = data.graph;
  if (g && Array.isArray(g.edges)) {
    const nodes = (g.nodes || []).map(n => (typeof n === 'string' ? n : n.id ?? n.name));
    for (const e of g.edges) for (const n of [e.from, e.to]) if (!nodes.includes(n)) nodes.push(n);
    const box = el('div', {class: 'chart-box'});
    pane.append(el('h4', {}, 'Communication graph'), box);
    graph(box, nodes, g.edges);
  }
  const rest = Object.fromEntries(Object.entries(data).filter(([k]) => k !== 'members' && k !== 'graph'));
  if (Object.keys(rest).length) pane.append(el('details', {class: 'sec'}, el('summary', {}, 'Other figures'), pretty(rest)));
}
