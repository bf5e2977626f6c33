// Number and date formats shared by the pages.

const usd = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6 });
const int = new Intl.NumberFormat('en-US');

/** Dollars from micro-dollars, exact to the micro-dollar. */
export function money(micros) { return usd.format((micros || 0) / 1e6); }

/** An integer with thousands separators. */
export function count(n) { return int.format(n || 0); }

/** A short local date-time. */
export function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** YYYY-MM-DD of a Date in UTC (the cost report's days are UTC). */
export function utcDay(d) { return d.toISOString().slice(0, 10); }
