import { describe, expect, it } from 'vitest';
import { ago, bytes, formatValue, historyCsv, inTime, mainFields, sparkField } from './format';

describe('formatValue', () => {
  it.each([
    ['temperature', 21.456, '21.5 °C'],
    ['pressure', 100044, '1000.4 hPa'],
    ['humidity', 53.49, '53 %'],
    ['voltage', 2.977, '2.98 V'],
    ['temperature', null, '–'],
    ['temperature', Number.NaN, '–'],
    ['unknownField', 7, '7'],
  ])('%s %s → %s', (field, value, expected) => {
    expect(formatValue(field, value)).toBe(expected);
  });
});

describe('ago', () => {
  it.each([
    [null, 'never'],
    [100_000 - 5_000, '5 s ago'],
    [100_000 - 125_000, '2 min ago'],
    [100_000 + 3_000, '0 s ago'],
  ])('%s → %s', (ts, expected) => {
    expect(ago(ts, 100_000)).toBe(expected);
  });
  it('hours and days', () => {
    expect(ago(1_000, 7_201_000)).toBe('2 h ago');
    expect(ago(1_000, 3 * 86_400_000 + 1_000)).toBe('3 d ago');
  });
});

describe('mainFields and historyCsv', () => {
  it('air quality first for a Ruuvi Air', () => {
    expect(mainFields('ruuvi_air')[0]).toBe('CO2');
    expect(mainFields('ruuvi_tag')[0]).toBe('temperature');
  });
  it('writes one row per bucket with empty cells for gaps', () => {
    const csv = historyCsv([0, 60_000], { temperature: { avg: [21, null], min: [20, null], max: [22, null] } });
    expect(csv).toBe('time,temperature_avg,temperature_min,temperature_max\n1970-01-01T00:00:00.000Z,21,20,22\n1970-01-01T00:01:00.000Z,,,\n');
  });
});

describe('sparkField', () => {
  it('follows CO2 on an Air, temperature on a tag, else the first number', () => {
    expect(sparkField('ruuvi_air', { temperature: 21, CO2: 600 })).toBe('CO2');
    expect(sparkField('ruuvi_tag', { ts: 1, temperature: 21 })).toBe('temperature');
    expect(sparkField('lan', { ts: 1, label: 'x', power: 12 })).toBe('power');
    expect(sparkField(undefined, { ts: 1 })).toBe('temperature');
  });
});

describe('bytes and inTime', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [4096 + 512, '4.5 KiB'],
    [64 * 1024 * 1024, '64 MiB'],
    [3 * 1024 ** 3, '3.0 GiB'],
  ])('%d bytes is %s', (count, text) => {
    expect(bytes(count)).toBe(text);
  });
  it.each([
    [100_000 + 4_000, 'in 4 s'],
    [100_000 + 125_000, 'in 2 min'],
    [100_000 - 1_000, 'in 0 s'],
  ])('%d is %s', (ts, text) => {
    expect(inTime(ts, 100_000)).toBe(text);
  });
});
