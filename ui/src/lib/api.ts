// The one typed client of the gateway's HTTP API (docs/api.md). Pages never call fetch directly.

export type DeviceState = 'discovered' | 'pending_claim' | 'active' | 'deactivated' | 'adopted' | 'ignored' | 'blocked' | string;

export interface Reading {
  ts: number;
  deviceId: string;
  mac?: string;
  rssi?: number | null;
  receiver?: string;
  dataFormat?: number;
  motion?: 'stationary' | 'moved' | 'moving';
  [field: string]: unknown;
}

export interface Device {
  id: string;
  kind: string;
  mac: string | null;
  name: string | null;
  room: string | null;
  state: DeviceState;
  online: boolean;
  firstSeen: number;
  lastSeen: number;
  lastRssi: number | null;
  lastReceiver: string | null;
  dataFormat: number | null;
  lastReading: Reading | null;
  model?: string | null;
  manufacturer?: string | null;
  firmware?: string | null;
  viaPairing?: boolean;
  calibration?: Calibration | null;
  capabilities?: { commands?: CommandSpec[]; telemetry?: { name: string; unit?: string; type: string }[] } | null;
}

export interface BluetoothStatus {
  state: string;
  message: string;
  adapter: string | null;
  scanning: boolean;
  advertsPerSecond: number;
  tagsHeard: number;
  lastAdvertAt: number | null;
}

export interface Health {
  status: string;
  version: string;
  site: string;
  uptimeSeconds: number;
  devicesOnline: number;
  mqtt: { listen: string; clientsConnected: number };
  bluetooth: BluetoothStatus;
  alerts?: Record<string, number>;
  /** `status` is `degraded` while the store cannot write; `lastError` says why. */
  store?: { lastError?: string | null; queueDepth?: number; rowsWritten?: number };
}

export interface History {
  deviceId: string;
  from: number;
  to: number;
  bucketMs: number;
  ts: number[];
  count: number[];
  series: Record<string, { min: (number | null)[]; avg: (number | null)[]; max: (number | null)[] }>;
}

export interface Hearing {
  receiver: string;
  rssi: number | null;
  rssiSmoothed: number | null;
  lastHeard: number;
  advertisements: number;
}

export interface CommandSpec {
  name: string;
  description?: string;
  parameters?: JsonSchema;
}

export interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  description?: string;
  default?: unknown;
}

export interface TaskEvent {
  ts: number;
  state: string;
  attempt: number;
  detail?: unknown;
}

export interface Task {
  id: string;
  deviceId: string;
  command: string;
  params: unknown;
  state: string;
  attempt: number;
  createdAt: number;
  updatedAt: number;
  message?: string | null;
  result?: unknown;
  progress?: unknown;
  retryOf?: string | null;
  events?: TaskEvent[];
}

export interface Alert {
  id: number;
  deviceId: string;
  ts: number;
  severity: 'info' | 'warning' | 'critical';
  code: string;
  message: string;
  source: string;
  state: 'active' | 'cleared';
  ruleId?: number | null;
  clearedAt?: number | null;
  acknowledgedAt?: number | null;
  acknowledgedBy?: string | null;
}

export interface AlertRule {
  id: number;
  name: string;
  devices: string;
  field?: string | null;
  condition: 'above' | 'below' | 'silent';
  threshold?: number | null;
  clearAt?: number | null;
  /** How long the condition must hold, in ms (`for` when creating: "5m"). */
  forMs?: number;
  for?: string;
  severity: string;
  enabled?: boolean;
}

export interface Pairing {
  open: boolean;
  until: number | null;
  maxSeconds: number;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function request<T>(path: string, init?: RequestInit): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, { ...init, headers: { 'content-type': 'application/json', ...init?.headers } });
  } catch {
    throw new ApiError(0, 'unreachable', 'The gateway cannot be reached. Is it running?');
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body?.error ?? {};
    throw new ApiError(response.status, error.code ?? 'http_error', error.message ?? `HTTP ${response.status}`);
  }
  return body as T;
}

const post = <T>(path: string, body: unknown = {}) => request<T>(path, { method: 'POST', body: JSON.stringify(body) });

export interface BrokerClient {
  clientId: string;
  username: string | null;
  role: string | null;
  address: string;
  transport: string;
  protocol: string;
  connectedAt: number;
  publishesIn: number;
  publishesOut: number;
  denied: number;
  throttled: number;
  dropped: number;
  publishRateIn: number;
  publishRateOut: number;
}

export interface Account {
  username: string;
  role: string;
  site: string;
  enabled: boolean;
  description?: string | null;
  rules?: { filter: string; access: string }[];
  createdAt: number;
}

export interface Provisioning {
  username: string;
  password: string;
  site: string;
  registerTopic: string;
  replyTopic: string;
}

export interface Calibration {
  temperature: number;
  humidity: number;
  pressure: number;
}

export interface DeviceConfig {
  deviceId: string;
  desired: Record<string, unknown>;
  version: number;
  updatedAt: number;
  sentAt: number | null;
  reported: { version: number; status: string; message?: string | null; at: number } | null;
  inSync: boolean;
}

export interface AuthStatus {
  required: boolean;
  configured: boolean;
  authenticated: boolean;
}

export interface UpstreamCheck {
  stage: string;
  ok: boolean;
  message: string;
  millis: number;
}

export interface UpstreamTest {
  ok: boolean;
  failed: string | null;
  checks: UpstreamCheck[];
}

export interface Upstream {
  name: string;
  url: string;
  username: string | null;
  tls: boolean;
  prefix: string;
  forward: string[];
  commandsTopic: string | null;
  status: {
    state: 'connecting' | 'connected' | 'waiting' | 'stopped';
    since: number;
    failures: number;
    nextAttemptAt: number | null;
    lastError: { stage: string; message: string; at: number } | null;
  };
  buffer: { messages: number; bytes: number; oldestAgeSeconds: number | null; maxBytes: number; maxAgeSeconds: number };
  counters: { buffered: number; delivered: number; droppedSize: number; droppedAge: number };
  stats: Record<string, number>;
}

export interface StagedRestore {
  staged: boolean;
  backup: { schemaVersion: number; devices: number; readings: number; bytes: number };
  message: string;
}

export const api = {
  auth: () => request<AuthStatus>('/api/auth'),
  settings: () => request<Record<string, any>>('/api/settings'),
  upstreams: () => request<{ upstreams: Upstream[] }>('/api/upstreams').then((r) => r.upstreams),
  testUpstream: (name: string) => post<UpstreamTest>(`/api/upstreams/${encodeURIComponent(name)}/test`),
  restore: (file: File) =>
    request<StagedRestore>('/api/restore', { method: 'POST', body: file, headers: { 'content-type': 'application/vnd.sqlite3' } }),
  saveSettings: (change: Record<string, unknown>) =>
    request<{ saved: Record<string, unknown>; restartRequired: boolean }>('/api/settings', { method: 'PUT', body: JSON.stringify(change) }),
  config: (id: string) => request<DeviceConfig>(`/api/devices/${encodeURIComponent(id)}/config`),
  setConfig: (id: string, desired: Record<string, unknown>) =>
    request<DeviceConfig>(`/api/devices/${encodeURIComponent(id)}/config`, { method: 'PUT', body: JSON.stringify(desired) }),
  clients: () => request<BrokerClient[]>('/api/broker/clients'),
  accounts: () => request<Account[]>('/api/broker/accounts'),
  createAccount: (username: string, role: string, description: string) =>
    post<{ account: Account; password: string }>('/api/broker/accounts', { username, role, description: description || undefined }),
  deleteAccount: (name: string) => request<unknown>(`/api/broker/accounts/${encodeURIComponent(name)}`, { method: 'DELETE' }),
  provisioning: () => request<Provisioning>('/api/provisioning'),
  // Empty name or room: left as they are (the API refuses empty strings).
  rename: (id: string, name: string, room: string) =>
    request<Device>(`/api/devices/${encodeURIComponent(id)}`, {
      method: 'PATCH',
      body: JSON.stringify({ name: name.trim() || undefined, room: room.trim() || undefined }),
    }),
  adopt: (id: string, name: string, room: string, calibration: Calibration) =>
    post<Device>(`/api/devices/${encodeURIComponent(id)}/adopt`, {
      name: name.trim() || undefined,
      room: room.trim() || undefined,
      calibration,
    }),
  tagAction: (id: string, action: 'ignore' | 'block' | 'unblock' | 'deactivate') =>
    post<Device>(`/api/devices/${encodeURIComponent(id)}/${action}`),
  login: (password: string) => post<{ authenticated: boolean }>('/api/auth/login', { password }),
  setup: (password: string, setupCode: string) => post<{ authenticated: boolean }>('/api/auth/setup', { password, setupCode }),
  logout: () => post<{ authenticated: boolean }>('/api/auth/logout'),
  claim: (code: string) => post<Device>('/api/claims', { code }),
  approve: (id: string) => post<Device>(`/api/devices/${encodeURIComponent(id)}/approve`),
  pairing: () => request<Pairing>('/api/pairing'),
  openPairing: (minutes: number) => post<Pairing>('/api/pairing', { minutes }),
  closePairing: () => request<Pairing>('/api/pairing', { method: 'DELETE' }),
  tasks: (id: string) => request<Task[]>(`/api/devices/${encodeURIComponent(id)}/tasks?limit=20`),
  task: (taskId: string) => request<Task>(`/api/tasks/${encodeURIComponent(taskId)}`),
  sendCommand: (id: string, command: string, params: unknown) =>
    post<Task>(`/api/devices/${encodeURIComponent(id)}/tasks`, { command, params }),
  cancelTask: (taskId: string) => post<Task>(`/api/tasks/${encodeURIComponent(taskId)}/cancel`),
  retryTask: (taskId: string) => post<Task>(`/api/tasks/${encodeURIComponent(taskId)}/retry`),
  alerts: () => request<Alert[]>('/api/alerts?limit=200'),
  openAlerts: () => request<Alert[]>('/api/alerts?state=active&unacknowledged=true&limit=1000'),
  acknowledge: (alertId: number) => post<Alert>(`/api/alerts/${alertId}/ack`),
  rules: () => request<AlertRule[]>('/api/alert-rules'),
  createRule: (rule: Partial<AlertRule>) => post<AlertRule>('/api/alert-rules', rule),
  deleteRule: (ruleId: number) => request<unknown>(`/api/alert-rules/${ruleId}`, { method: 'DELETE' }),
  health: () => request<Health>('/api/health'),
  devices: () => request<Device[]>('/api/devices'),
  device: (id: string) => request<Device>(`/api/devices/${encodeURIComponent(id)}`),
  receivers: (id: string) =>
    request<{ device: string; receivers: Hearing[] }>(`/api/devices/${encodeURIComponent(id)}/receivers`),
  history: (id: string, from: string, to: string, fields: string[]) => {
    const query = new URLSearchParams({ from, to, fields: fields.join(',') });
    return request<History>(`/api/devices/${encodeURIComponent(id)}/readings?${query}`);
  },
};
