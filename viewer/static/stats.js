// What the page measured about itself, for the benchmark and the tests (window.viewerStats):
// when the first rows were painted, each live event's seq as it arrived (to check for gaps and
// repeats), and how long after its publication each live event reached the screen.
export const stats = {
  firstPaint: null,
  firstPaintFromLoad: null,
  overviewAt: null,
  keyAt: null,
  received: [],      // seqs of live events, in arrival order
  reconnects: 0,
  lags: [],          // ms from an event's timestamp to its row in the DOM (live events)
  liveSeqs: new Set(),
  lastRendered: null,
  onRendered(shown) {
    for (const s of shown) {
      if (this.liveSeqs.has(s.seq)) {
        this.lags.push(Date.now() - s.ts * 1000);
        this.liveSeqs.delete(s.seq);
      }
      if (this.lastRendered == null || s.seq > this.lastRendered) this.lastRendered = s.seq;
    }
  },
};
window.viewerStats = stats;
