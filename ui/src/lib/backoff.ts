// Reconnect delays for the live connection: doubling from 0.5 s to 30 s, with jitter so that many
// open browsers do not reconnect in step after a gateway restart.

export function reconnectDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(30_000, 500 * 2 ** Math.max(0, attempt));
  return Math.round(base * (0.75 + 0.5 * random()));
}
