// Loaded before the page's own script by the browser test: records every long task
// (over 50 ms on the main thread) and the layout shift the page accumulates, so the
// test can say a page with 50 live jobs never blocked nor jumped.
window.__hubObserved = { longTasks: [], layoutShift: 0 };
new PerformanceObserver(function (list) {
  list.getEntries().forEach(function (entry) {
    window.__hubObserved.longTasks.push(Math.round(entry.duration));
  });
}).observe({ type: "longtask", buffered: true });
new PerformanceObserver(function (list) {
  list.getEntries().forEach(function (entry) {
    if (!entry.hadRecentInput) { window.__hubObserved.layoutShift += entry.value; }
  });
}).observe({ type: "layout-shift", buffered: true });
