// Following a live run over server-sent events. The stream starts after the last seq this page
// has; every message carries its seq. On any error the stream is closed and reopened after
// the last seq received, so nothing is missed and nothing arrives twice (a seq that is not
// the next one would be dropped, and the stream reopened from the right place).
import {runPath} from './api.js';
import {stats} from './stats.js';

export class LiveFeed {
  constructor(name, after, onEvents, onState) {
    this.name = name;
    this.last = after;
    this.onEvents = onEvents;
    this.onState = onState;
    this.buffer = [];
    this.closed = false;
    this.delay = 250;
  }

  open() {
    if (this.closed) return;
    const url = runPath('stream', this.name) + '?after=' + this.last;
    const es = this.es = new EventSource(url);
    es.onopen = () => { this.delay = 250; this.onState('connected'); };
    es.onmessage = m => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (ev.seq <= this.last) return;            // never twice
      if (ev.seq !== this.last + 1) { this.reopen(); return; }  // never a gap
      this.last = ev.seq;
      stats.received.push(ev.seq);
      stats.liveSeqs.add(ev.seq);
      this.buffer.push(ev);
      if (this.buffer.length === 1) queueMicrotask(() => this.flush());
    };
    es.onerror = () => { this.onState('reconnecting'); this.reopen(); };
  }

  flush() {
    const list = this.buffer;
    this.buffer = [];
    if (list.length) this.onEvents(list);
  }

  reopen() {
    if (this.es) this.es.close();
    this.flush();
    if (this.closed) return;
    stats.reconnects++;
    setTimeout(() => this.open(), this.delay);
    this.delay = Math.min(this.delay * 2, 4000);
  }

  close() {
    this.closed = true;
    if (this.es) this.es.close();
  }
}
