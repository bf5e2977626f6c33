// Cost per day, stacked by provider, drawn with Chart.js (vendored UMD build, loaded as a
// classic script before the modules, so it is on globalThis).

const COLORS = { claude: '#d97757', gpt: '#10a37f', grok: '#8b5cf6', mistral: '#f59e0b', gemini: '#4285f4', echo: '#94a3b8' };
const SPARE = ['#ec4899', '#14b8a6', '#eab308', '#64748b'];

let chart = null;

/** Draws (or redraws) the chart from day×provider rows over every day of [from, to]. */
export function drawCostChart(canvas, rows, from, to) {
  const days = [];
  for (let d = new Date(from + 'T00:00:00Z'); d <= new Date(to + 'T00:00:00Z'); d.setUTCDate(d.getUTCDate() + 1)) days.push(d.toISOString().slice(0, 10));
  const providers = [...new Set(rows.map((r) => r.provider))].sort();
  const datasets = providers.map((p, i) => {
    const data = days.map((day) => {
      const r = rows.find((x) => x.day === day && x.provider === p);
      return r ? r.costMicros / 1e6 : 0;
    });
    return { label: p, data, backgroundColor: COLORS[p] || SPARE[i % SPARE.length], stack: 'cost' };
  });
  const styles = getComputedStyle(document.documentElement);
  const text = styles.getPropertyValue('--muted').trim();
  const grid = styles.getPropertyValue('--border').trim();
  if (chart) chart.destroy();
  chart = new globalThis.Chart(canvas, {
    type: 'bar',
    data: { labels: days, datasets },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      scales: {
        x: { stacked: true, ticks: { color: text }, grid: { color: grid } },
        y: { stacked: true, ticks: { color: text, callback: (v) => '$' + v }, grid: { color: grid }, title: { display: true, text: 'USD', color: text } },
      },
      plugins: {
        legend: { labels: { color: text } },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: $${c.parsed.y.toFixed(6)}` } },
      },
    },
  });
  // The canvas is opaque to screen readers: its label carries the totals per provider.
  const sums = datasets.map((d) => `${d.label} $${d.data.reduce((a, b) => a + b, 0).toFixed(6)}`);
  canvas.setAttribute('aria-label', `Cost per day by provider, ${from} to ${to}: ${sums.join(', ') || 'no usage'}`);
}
