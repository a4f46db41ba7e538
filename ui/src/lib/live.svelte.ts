// Live state shared by every page: the device list, kept current by the gateway's WebSocket
// (`/api/live`), the gateway's health, and the connection state for the offline banner.
// Reconnects with backoff; after a reconnect the device list is re-read, so nothing missed while
// offline stays stale.

import { api, type Device, type Health, type Reading, type Task } from './api';
import { reconnectDelay } from './backoff';
import { sparkField } from './format';

/** Points kept per device for tile sparklines. */
const SPARK_POINTS = 60;
const HEALTH_EVERY_MS = 5_000;

export type Connection = 'connecting' | 'open' | 'offline';

class Live {
  devices = $state<Record<string, Device>>({});
  /** Recent values of each device's main field, oldest first, for sparklines. */
  spark = $state<Record<string, number[]>>({});
  health = $state<Health | null>(null);
  connection = $state<Connection>('connecting');
  /** Incremented on every reading, so pages can follow the stream. */
  readings = $state(0);
  lastReading = $state<Reading | null>(null);
  /** Incremented on every alert change and task transition, so pages can reload what they show. */
  alertChanges = $state(0);
  taskChanges = $state(0);
  configChanges = $state(0);
  /** Open (active, unacknowledged) alerts per device, for the tiles' badges. */
  openAlerts = $state<Record<string, { count: number; worst: string }>>({});
  lastTask = $state<Task | null>(null);
  private attempt = 0;
  private started = false;

  start() {
    if (this.started) return;
    this.started = true;
    // The first device list and alerts load alongside the WebSocket handshake, not after it.
    this.refresh().catch(() => {});
    this.loadAlerts();
    this.connect();
    const poll = async () => {
      try {
        this.health = await api.health();
      } catch {
        this.health = null;
      }
    };
    poll();
    setInterval(poll, HEALTH_EVERY_MS);
    setInterval(() => this.connection === 'open' && this.refresh().catch(() => {}), 30_000);
  }

  async loadAlerts() {
    const rank: Record<string, number> = { info: 0, warning: 1, critical: 2 };
    const next: Record<string, { count: number; worst: string }> = {};
    for (const alert of await api.openAlerts().catch(() => [])) {
      const entry = (next[alert.deviceId] ??= { count: 0, worst: 'info' });
      entry.count++;
      if (rank[alert.severity] > rank[entry.worst]) entry.worst = alert.severity;
    }
    this.openAlerts = next;
  }

  /** Re-reads the device list (after a change made here, and every 30 s as a safety net). */
  async refresh() {
    const list = await api.devices();
    const next: Record<string, Device> = {};
    for (const device of list) {
      next[device.id] = device;
      // Start each sparkline with the stored last value, so the first live reading draws a line.
      const value = device.lastReading?.[sparkField(device.kind, device.lastReading)];
      if (!this.spark[device.id] && typeof value === 'number') this.spark[device.id] = [value];
    }
    this.devices = next;
  }

  private connect() {
    this.connection = this.attempt === 0 ? 'connecting' : 'offline';
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/api/live`);
    socket.onopen = async () => {
      const reconnected = this.connection === 'offline';
      this.attempt = 0;
      this.connection = 'open';
      // Back after a drop: re-read what changed while offline.
      if (reconnected) {
        this.loadAlerts();
        await this.refresh().catch(() => {});
      }
    };
    socket.onmessage = (message) => this.handle(message.data);
    socket.onclose = () => {
      this.connection = 'offline';
      setTimeout(() => this.connect(), reconnectDelay(this.attempt++));
    };
  }

  private handle(text: string) {
    let event: { type: string; data: any };
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    if (event.type === 'reading' || event.type === 'telemetry') {
      // LAN telemetry: the device's own message, with its declared fields, shown like a reading.
      const reading =
        event.type === 'reading'
          ? (event.data as Reading)
          : ({ ...(event.data.raw ?? {}), ...Object.fromEntries(event.data.values ?? []), ts: event.data.ts, deviceId: event.data.deviceId } as Reading);
      const device = this.devices[reading.deviceId];
      if (device) {
        device.lastReading = reading;
        device.lastSeen = reading.ts;
        device.lastRssi = (reading.rssi as number | null) ?? device.lastRssi;
        device.online = true;
      } else {
        // A tag heard for the first time: its record follows from the list.
        this.refresh().catch(() => {});
      }
      const value = reading[sparkField(device?.kind, reading)];
      if (typeof value === 'number') {
        const points = [...(this.spark[reading.deviceId] ?? []), value];
        this.spark[reading.deviceId] = points.slice(-SPARK_POINTS);
      }
      this.lastReading = reading;
      this.readings++;
    } else if (event.type === 'client_connected' || event.type === 'client_disconnected') {
      const client = event.type === 'client_connected' ? event.data : event.data.client;
      const device = client?.role === 'device' ? this.devices[client.clientId] : undefined;
      if (device) device.online = event.type === 'client_connected';
    } else if (event.type === 'device_lifecycle') {
      this.refresh().catch(() => {});
    } else if (event.type === 'availability') {
      const device = this.devices[event.data.deviceId];
      if (device) device.online = event.data.online;
    } else if (event.type === 'config') {
      this.configChanges++;
    } else if (event.type === 'alert') {
      this.alertChanges++;
      this.loadAlerts();
    } else if (event.type === 'task') {
      this.lastTask = event.data as Task;
      this.taskChanges++;
    } else if (event.type === 'device_discovered') {
      this.refresh().catch(() => {});
    }
  }
}

export const live = new Live();

