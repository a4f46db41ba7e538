// UI performance budget, measured in Debian's headless Chromium (not a test: numbers for
// docs/benchmarks.md). Run with `make bench-ui`, which starts a gateway with 100 simulated tags.
//   node e2e/bench.mjs <gateway base URL>
// 1. uPlot drawing 100,000 points (the chart library the device page uses), median of 5 draws;
// 2. the overview with 100 devices updating about once a second: frame times over 10 s;
// 3. first render of the overview (navigation start → first tile).
import { launch } from './lib.mjs';

const [base] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });

  await page.setContent('<div id="chart"></div>');
  await page.addStyleTag({ path: 'node_modules/uplot/dist/uPlot.min.css' });
  await page.addScriptTag({ path: 'node_modules/uplot/dist/uPlot.iife.min.js' });
  const draws = await page.evaluate(async () => {
    const n = 100_000;
    const xs = new Float64Array(n);
    const ys = new Float64Array(n);
    const start = Date.now() / 1000 - n * 60;
    for (let i = 0; i < n; i++) {
      xs[i] = start + i * 60;
      ys[i] = 20 + 5 * Math.sin(i / 500) + Math.random();
    }
    const times = [];
    for (let run = 0; run < 5; run++) {
      const el = document.getElementById('chart');
      el.innerHTML = '';
      // Until uPlot's own `draw` hook: setup, scales, paths and the canvas drawing itself.
      const t0 = performance.now();
      let plot;
      await new Promise((resolve) => {
        const hooks = { draw: [() => resolve()] };
        plot = new uPlot({ width: 1200, height: 300, series: [{}, { stroke: 'blue' }], hooks }, [xs, ys], el);
      });
      times.push(performance.now() - t0);
      plot.destroy();
    }
    return times.sort((a, b) => a - b);
  });
  console.log(`chart 100k points: median ${draws[2].toFixed(1)} ms (min ${draws[0].toFixed(1)}, max ${draws[4].toFixed(1)})`);

  const t0 = Date.now();
  await page.goto(base);
  await page.waitForSelector('[data-testid=tile]');
  console.log(`overview first tile: ${Date.now() - t0} ms`);
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=tile]').length >= 100, null, { timeout: 30_000 });
  const frames = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const deltas = [];
        let last = performance.now();
        const end = last + 10_000;
        const tick = (now) => {
          deltas.push(now - last);
          last = now;
          if (now < end) requestAnimationFrame(tick);
          else resolve(deltas.sort((a, b) => a - b));
        };
        requestAnimationFrame(tick);
      }),
  );
  const pct = (p) => frames[Math.min(frames.length - 1, Math.floor(frames.length * p))].toFixed(1);
  const tiles = await page.locator('[data-testid=tile]').count();
  console.log(`overview with ${tiles} tiles over 10 s: ${frames.length} frames, p50 ${pct(0.5)} ms, p95 ${pct(0.95)} ms, p99 ${pct(0.99)} ms, max ${frames[frames.length - 1].toFixed(1)} ms`);
} finally {
  await browser.close();
}
