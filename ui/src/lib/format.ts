// How values are shown: units, precision and "5 s ago". Pure, tested in format.test.ts.

export interface FieldInfo {
  label: string;
  unit: string;
  digits: number;
  /** Multiply the API value (SI units, as the Ruuvi Gateway reports them) before showing it. */
  scale?: number;
}

export const FIELDS: Record<string, FieldInfo> = {
  temperature: { label: 'Temperature', unit: '°C', digits: 1 },
  humidity: { label: 'Humidity', unit: '%', digits: 0 },
  pressure: { label: 'Pressure', unit: 'hPa', digits: 1, scale: 0.01 },
  voltage: { label: 'Battery', unit: 'V', digits: 2 },
  rssi: { label: 'Signal', unit: 'dBm', digits: 0 },
  CO2: { label: 'CO₂', unit: 'ppm', digits: 0 },
  'PM2.5': { label: 'PM2.5', unit: 'µg/m³', digits: 1 },
  VOC: { label: 'VOC', unit: 'index', digits: 0 },
  NOx: { label: 'NOx', unit: 'index', digits: 0 },
  luminosity: { label: 'Light', unit: 'lx', digits: 0 },
  iaqs: { label: 'Air quality', unit: '/100', digits: 0 },
};

export function formatValue(field: string, value: unknown): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '–';
  const info = FIELDS[field];
  if (!info) return String(value);
  return `${(value * (info.scale ?? 1)).toFixed(info.digits)} ${info.unit}`;
}

export function ago(ts: number | null | undefined, now: number = Date.now()): string {
  if (!ts) return 'never';
  const seconds = Math.max(0, Math.round((now - ts) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** A future moment as "in 5 s" (a reconnect attempt, a deadline). */
export function inTime(ts: number, now: number = Date.now()): string {
  const seconds = Math.max(0, Math.round((ts - now) / 1000));
  if (seconds < 60) return `in ${seconds} s`;
  if (seconds < 3600) return `in ${Math.floor(seconds / 60)} min`;
  return `in ${Math.floor(seconds / 3600)} h`;
}

/** A byte count in binary units, as disk tools show it. */
export function bytes(count: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${count} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** The fields worth a tile and a chart for a device kind. */
export function mainFields(kind: string, declared: string[] = []): string[] {
  if (kind === 'ruuvi_air') return ['CO2', 'PM2.5', 'temperature', 'humidity'];
  if (kind === 'ruuvi_tag') return ['temperature', 'humidity', 'pressure', 'voltage'];
  return declared.length ? declared : ['temperature', 'humidity', 'pressure', 'voltage'];
}

/** A CSV of a history response: one row per bucket, avg/min/max per field. */
export function historyCsv(ts: number[], series: Record<string, { min: (number | null)[]; avg: (number | null)[]; max: (number | null)[] }>): string {
  const fields = Object.keys(series);
  const header = ['time', ...fields.flatMap((f) => [`${f}_avg`, `${f}_min`, `${f}_max`])];
  const cell = (v: number | null) => (v === null || v === undefined ? '' : String(v));
  const rows = ts.map((t, i) => [new Date(t).toISOString(), ...fields.flatMap((f) => [cell(series[f].avg[i]), cell(series[f].min[i]), cell(series[f].max[i])])].join(','));
  return [header.join(','), ...rows].join('\n') + '\n';
}

/** The field a device's sparkline follows: CO2 for a Ruuvi Air, else temperature, else its first number. */
export function sparkField(kind: string | undefined, reading: Record<string, unknown>): string {
  if (kind === 'ruuvi_air') return 'CO2';
  if (typeof reading.temperature === 'number') return 'temperature';
  return Object.keys(reading).find((k) => typeof reading[k] === 'number' && k !== 'ts') ?? 'temperature';
}
