// What the page measured about itself, for the benchmark and the tests (window.viewerStats).
// Times are taken in the animation frame after the rows went into the DOM, i.e. when they
// are painted: the first rows of a run page (performance.now(), from navigation start), the
// last row after End/G (from the key press), and each live event's row (Date.now() against
// the time the event was published, both the system clock).
export const stats = {
  firstPaint: null,
  overviewAt: null,
  keyAt: null,
  jumps: [],         // ms from End/G to the last row painted
  received: [],      // seqs of live events, in arrival order
  reconnects: 0,
  lags: [],          // ms from an event's publication to its row painted (live events)
  liveSeqs: new Set(),
  reset() {  // a new run page
    Object.assign(this, {firstPaint: null, painting: false, overviewAt: null, keyAt: null, jumps: [], received: [],
      reconnects: 0, lags: [], liveSeqs: new Set()});
  },
  onRendered(shown, head) {
    if (shown.length && this.firstPaint == null && !this.painting) {
      this.painting = true;
      requestAnimationFrame(() => { this.firstPaint = performance.now(); });
    }
    if (this.keyAt != null && shown.some(s => s.seq === head)) {
      const k = this.keyAt;
      this.keyAt = null;
      requestAnimationFrame(() => this.jumps.push(performance.now() - k));
    }
    const live = shown.filter(s => this.liveSeqs.has(s.seq));
    if (live.length) {
      for (const s of live) this.liveSeqs.delete(s.seq);
      requestAnimationFrame(() => {
        const now = Date.now();
        for (const s of live) this.lags.push(now - s.ts * 1000);
      });
    }
  },
};
window.viewerStats = stats;
