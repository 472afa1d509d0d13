// The swimlane timeline: one row per event (row = seq - first), one column per lane (each
// agent, the environment server, the supervisor), team messages as arrows between lanes.
//
// Virtualised: only the rows in view (plus a margin) are in the DOM, and event summaries are
// fetched in pages of PAGE sequence numbers as the view reaches them; pages far from the view
// are dropped again, so a 50,000-event run costs what one screen costs. Rows have one height
// (ROW) unless expanded; an expanded row's extra height is measured (ResizeObserver) and
// added to the rows below it.
import {el, clear, clock} from './util.js';
import {get, runPath} from './api.js';

export const ROW = 26;
const PAGE = 500;
const OVERSCAN = 15;
const MAX_PAGES = 40;

const ICON = {
  agent_step: '▸', agent_status: '·', command_event: '$', observation_event: '«', output_chunk: '…',
  score_event: '★', work_item: '✉', work_result: '✔', question: '?', answer: '!', plan_update: '☰',
  run_info: '▶', run_end: '■', control: '◆', note: '✎',
};

export class Timeline {
  constructor(root, opts) {
    this.opts = opts;
    this.name = opts.name;
    this.first = opts.first || 1;
    this.head = opts.head || 0;
    this.t0 = opts.t0 || 0;
    this.lanes = [];
    this.laneIndex = new Map();
    this.rows = new Map();          // seq -> summary
    this.pages = new Map();         // page -> 'loading' | 'done'
    this.nodes = new Map();         // seq -> row element in the DOM
    this.expanded = new Map();      // seq -> extra height (px)
    this.expSeqs = [];
    this.selected = null;
    this.follow = false;            // stick to the newest event
    this.pendingNew = 0;
    this.scheduled = false;
    this.renderHooks = [];
    this.root = root;
    this.head_el = el('div', {class: 'tl-head'});
    this.scroll = el('div', {class: 'tl-scroll', tabindex: '0'});
    this.spacer = el('div', {class: 'tl-spacer'});
    this.newBtn = el('button', {class: 'tl-new hidden', onclick: () => this.jumpLast()});
    this.scroll.append(this.spacer);
    root.append(this.head_el, this.scroll, this.newBtn);
    for (const l of opts.lanes || []) this.addLane(l.name, l.role);
    this.scroll.addEventListener('scroll', () => {
      const bottom = this.scroll.scrollTop + this.scroll.clientHeight >= this.scroll.scrollHeight - ROW * 2;
      this.follow = bottom;
      if (bottom) this.setNew(0);
      this.schedule();
    });
    this.resize = new ResizeObserver(entries => {
      let changed = false;
      for (const e of entries) {
        const seq = +e.target.dataset.seq;
        if (!this.expanded.has(seq)) continue;
        const extra = Math.ceil(e.target.offsetHeight);
        if (extra !== this.expanded.get(seq)) { this.expanded.set(seq, extra); changed = true; }
      }
      if (changed) this.relayout();
    });
    this.onResize = () => this.schedule();
    window.addEventListener('resize', this.onResize);
    this.layoutSpacer();
  }

  destroy() {
    window.removeEventListener('resize', this.onResize);
    this.resize.disconnect();
  }

  drop(seq, node) {
    const box = node.querySelector('.detail');
    if (box) this.resize.unobserve(box);
    node.remove();
    this.nodes.delete(seq);
  }

  // ---------------------------------------------------------------- lanes

  addLane(name, role) {
    if (this.laneIndex.has(name)) {
      if (role) this.lanes[this.laneIndex.get(name)].role = role;
      return false;
    }
    if (name === '*' || name === '' || name == null) return false;
    // agents first (in order of appearance), then env, then supervisor
    const rank = n => (n === 'supervisor' ? 2 : n === 'env' ? 1 : 0);
    const lane = {name, role: role || ''};
    let at = this.lanes.findIndex(l => rank(l.name) > rank(name));
    if (at < 0) at = this.lanes.length;
    this.lanes.splice(at, 0, lane);
    this.laneIndex = new Map(this.lanes.map((l, i) => [l.name, i]));
    this.drawHead();
    this.rebuild();
    return true;
  }

  drawHead() {
    clear(this.head_el);
    this.head_el.append(el('div', {class: 'gut'}, 'seq · time'));
    const lanes = el('div', {class: 'lanes'});
    this.lanes.forEach((l, i) => {
      lanes.append(el('div', {class: 'lane-name', style: this.col(i), title: l.role ? `${l.name} (${l.role})` : l.name},
        el('b', {}, l.name), l.role && l.role !== l.name ? el('span', {class: 'role'}, l.role) : null));
    });
    this.head_el.append(lanes);
  }

  col(i) {
    const w = 100 / Math.max(this.lanes.length, 1);
    return {left: `${i * w}%`, width: `${w}%`};
  }

  center(i) {
    const w = 100 / Math.max(this.lanes.length, 1);
    return (i + 0.5) * w;
  }

  // ---------------------------------------------------------------- geometry

  count() { return Math.max(0, this.head - this.first + 1); }

  top(seq) {
    let extra = 0;
    for (const s of this.expSeqs) { if (s >= seq) break; extra += this.expanded.get(s); }
    return (seq - this.first) * ROW + extra;
  }

  seqAt(y) {
    let extra = 0;
    for (const s of this.expSeqs) {
      const t = (s - this.first) * ROW + extra;
      if (y < t) break;
      if (y < t + ROW + this.expanded.get(s)) return s;
      extra += this.expanded.get(s);
    }
    return this.first + Math.floor((y - extra) / ROW);
  }

  total() {
    let extra = 0;
    for (const v of this.expanded.values()) extra += v;
    return this.count() * ROW + extra;
  }

  layoutSpacer() { this.spacer.style.height = this.total() + 'px'; }

  relayout() {
    this.layoutSpacer();
    for (const [seq, node] of this.nodes) node.style.top = this.top(seq) + 'px';
    this.schedule();
  }

  rebuild() {
    for (const [seq, node] of [...this.nodes]) this.drop(seq, node);
    this.schedule();
  }

  // ---------------------------------------------------------------- data

  setHead(head) {
    if (head <= this.head) return;
    const added = head - this.head;
    this.head = head;
    this.layoutSpacer();
    if (this.follow) this.scroll.scrollTop = this.scroll.scrollHeight;
    else this.setNew(this.pendingNew + added);
    this.schedule();
  }

  // seqs where a new broker epoch begins (a restarted broker): marked on the timeline
  setEpochs(epochs) {
    this.epochStarts = new Set(epochs.slice(1).map(e => e[0]));
    this.rebuild();
  }

  setNew(n) {
    this.pendingNew = n;
    this.newBtn.textContent = `${n} new event${n === 1 ? '' : 's'} ↓`;
    this.newBtn.classList.toggle('hidden', n === 0);
  }

  put(summary) {
    this.rows.set(summary.seq, summary);
    let lanesChanged = false;
    lanesChanged = this.addLane(summary.lane) || lanesChanged;
    for (const t of summary.to || []) lanesChanged = this.addLane(t) || lanesChanged;
    if (summary.from) lanesChanged = this.addLane(summary.from) || lanesChanged;
    const node = this.nodes.get(summary.seq);
    if (node && node.classList.contains('loading')) this.drop(summary.seq, node);
  }

  // live events, in order (the feed guarantees no gap and no repeat)
  addLive(list) {
    for (const s of list) this.put(s);
    const last = list[list.length - 1].seq;
    this.setHead(last);
    this.schedule();
  }

  ensure(a, b) {
    const pa = Math.floor((a - this.first) / PAGE), pb = Math.floor((b - this.first) / PAGE);
    for (let p = pa; p <= pb; p++) {
      if (this.pages.has(p)) continue;
      const from = this.first + p * PAGE, to = Math.min(this.head, from + PAGE - 1);
      let missing = false;
      for (let s = from; s <= to; s++) if (!this.rows.has(s)) { missing = true; break; }
      if (!missing) { this.pages.set(p, 'done'); continue; }
      this.pages.set(p, 'loading');
      get(runPath('events', this.name), {from, to}).then(r => {
        for (const s of r.events) this.put(s);
        // a page that ended before the head (the log grew since) is fetched again later
        this.pages.set(p, r.events.length >= to - from + 1 ? 'done' : 'partial');
        if (this.pages.get(p) === 'partial') setTimeout(() => this.pages.delete(p), 500);
        this.evict(p);
        this.schedule();
      }).catch(err => {
        this.pages.delete(p);
        this.opts.onError && this.opts.onError(err);
      });
    }
  }

  evict(keep) {
    if (this.pages.size <= MAX_PAGES) return;
    const view = Math.floor((this.seqAt(this.scroll.scrollTop) - this.first) / PAGE);
    const far = [...this.pages.keys()].filter(p => p !== keep && this.pages.get(p) === 'done')
      .sort((x, y) => Math.abs(y - view) - Math.abs(x - view));
    const last = Math.floor((this.head - this.first) / PAGE);
    for (const p of far.slice(0, this.pages.size - MAX_PAGES)) {
      if (Math.abs(p - view) <= 2 || p === last) continue;
      const from = this.first + p * PAGE;
      for (let s = from; s < from + PAGE; s++) if (!this.expanded.has(s) && s !== this.selected) this.rows.delete(s);
      this.pages.delete(p);
    }
  }

  // ---------------------------------------------------------------- rendering

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => { this.scheduled = false; this.render(); });
  }

  render() {
    if (!this.count()) return;
    const y = this.scroll.scrollTop, h = this.scroll.clientHeight || 600;
    const a = Math.max(this.first, this.seqAt(y) - OVERSCAN);
    const b = Math.min(this.head, this.seqAt(y + h) + OVERSCAN);
    this.ensure(a, b);
    for (const [seq, node] of [...this.nodes]) {
      if (seq < a || seq > b) this.drop(seq, node);
    }
    const shown = [];
    for (let seq = a; seq <= b; seq++) {
      let node = this.nodes.get(seq);
      if (!node) {
        const s = this.rows.get(seq);
        node = s ? this.row(s) : el('div', {class: 'row loading', dataset: {seq}}, el('div', {class: 'gut'}, String(seq)));
        node.style.top = this.top(seq) + 'px';
        this.spacer.append(node);
        this.nodes.set(seq, node);
        if (s) shown.push(s);
      }
    }
    for (const hook of this.renderHooks) hook(shown);
  }

  row(s) {
    const cls = ['row', 'k-' + s.kind];
    if (s.minor) cls.push('minor');
    if (s.state) cls.push('state-' + s.state.replace(/[^a-z]/g, ''));
    if (this.epochStarts && this.epochStarts.has(s.seq)) cls.push('epoch');
    if (s.seq === this.selected) cls.push('sel');
    if (this.expanded.has(s.seq)) cls.push('exp');
    const node = el('div', {class: cls.join(' '), dataset: {seq: s.seq}});
    node.append(el('div', {class: 'gut'}, el('span', {class: 'seq'}, String(s.seq)),
      el('span', {class: 't'}, clock(s.ts - this.t0))));
    if (cls.includes('epoch')) node.title = `the broker restarted here (epoch ${s.ep}); the log goes on without a gap`;
    const lanes = el('div', {class: 'lanes'});
    const at = this.laneIndex.get(s.lane) ?? 0;
    const targets = (s.to || []);
    for (const t of targets) {
      if (t === '*') {
        lanes.append(el('div', {class: 'arrow bcast', title: `${s.kind} to everyone`,
          style: {left: `${this.center(0)}%`, width: `${this.center(this.lanes.length - 1) - this.center(0)}%`},
          onclick: ev => { ev.stopPropagation(); this.opts.onFollow(s.seq); }}));
        continue;
      }
      const j = this.laneIndex.get(t);
      if (j == null || j === at) continue;
      lanes.append(this.arrow(at, j, s, 'msg'));
    }
    if (s.from && this.laneIndex.has(s.from)) {
      const j = this.laneIndex.get(s.from);
      if (j !== at) lanes.append(this.arrow(j, at, s, 'cmd'));
    }
    const blk = el('div', {class: 'blk' + this.scoreClass(s), style: this.col(at), title: s.title},
      el('span', {class: 'ic'}, ICON[s.kind] || '•'), el('span', {class: 'tx'}, s.title || s.kind));
    blk.addEventListener('click', () => this.opts.onToggle(s.seq));
    lanes.append(blk);
    node.append(lanes);
    if (this.expanded.has(s.seq)) {
      const box = el('div', {class: 'detail', dataset: {seq: s.seq}});
      node.append(box);
      this.opts.onDetail(s, box);
      this.resize.observe(box);
    }
    return node;
  }

  arrow(from, to, s, kind) {
    const a = this.center(from), b = this.center(to);
    const left = Math.min(a, b), width = Math.abs(b - a);
    return el('div', {class: `arrow ${kind} ${b > a ? 'right' : 'left'}`, style: {left: `${left}%`, width: `${width}%`},
      title: kind === 'cmd' ? `${s.from} → env: follow to its observation` : `${s.kind}: follow to the reply`,
      onclick: ev => { ev.stopPropagation(); this.opts.onFollow(s.seq); }});
  }

  scoreClass(s) {
    if (s.kind !== 'score_event') return '';
    const m = this.opts.metric && this.opts.metric();
    const v = s.scores && m ? s.scores[m.name] : null, base = s.base && m ? s.base[m.name] : null;
    if (v == null) return ' bad';
    if (base == null) return '';
    return (m.direction === 'min' ? v < base : v > base) ? ' good' : ' worse';
  }

  // ---------------------------------------------------------------- navigation

  visibleSeq() { return this.seqAt(this.scroll.scrollTop + this.scroll.clientHeight / 3); }

  scrollTo(seq, where = 0.3) {
    seq = Math.max(this.first, Math.min(this.head, seq));
    const h = this.scroll.clientHeight;
    const y = this.top(seq), bottom = y + ROW + (this.expanded.get(seq) || 0);
    if (y < this.scroll.scrollTop || bottom > this.scroll.scrollTop + h) {
      this.scroll.scrollTop = Math.max(0, y - h * where);
    }
    this.schedule();
  }

  select(seq, scroll = true) {
    if (seq == null || seq < this.first || seq > this.head) return;
    const old = this.nodes.get(this.selected);
    if (old) old.classList.remove('sel');
    this.selected = seq;
    const node = this.nodes.get(seq);
    if (node) node.classList.add('sel');
    if (scroll) this.scrollTo(seq);
    this.opts.onSelect && this.opts.onSelect(seq);
  }

  toggle(seq) {
    if (this.expanded.has(seq)) {
      this.expanded.delete(seq);
    } else {
      this.expanded.set(seq, 0);
    }
    this.expSeqs = [...this.expanded.keys()].sort((x, y) => x - y);
    const node = this.nodes.get(seq);
    if (node) this.drop(seq, node);
    this.relayout();
  }

  collapseAll() {
    this.expanded.clear();
    this.expSeqs = [];
    this.rebuild();
    this.relayout();
  }

  jumpLast() {
    this.follow = true;
    this.setNew(0);
    this.scroll.scrollTop = this.scroll.scrollHeight;
    if (this.head >= this.first) this.select(this.head, false);
    this.schedule();
  }

  jumpFirst() {
    this.follow = false;
    this.scroll.scrollTop = 0;
    this.select(this.first, false);
    this.schedule();
  }
}
