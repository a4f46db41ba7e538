import { describe, expect, it } from 'vitest';
import { reconnectDelay } from './backoff';

describe('reconnectDelay', () => {
  it.each([
    [0, 0.5, 500],
    [1, 0.5, 1000],
    [3, 0.5, 4000],
    [6, 0.5, 30000],
    [20, 0.5, 30000],
    [0, 0, 375],
    [0, 1, 625],
  ])('attempt %i with random %f waits %i ms', (attempt, random, expected) => {
    expect(reconnectDelay(attempt, () => random)).toBe(expected);
  });
});
