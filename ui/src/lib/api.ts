// The one typed client of the gateway's HTTP API (docs/api.md). Pages never call fetch directly.

export type DeviceState = 'discovered' | 'pending' | 'active' | 'deactivated' | 'adopted' | 'ignored' | 'blocked' | string;

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

export const api = {
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
