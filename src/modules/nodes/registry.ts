// GPU node rows: registration, heartbeats, and marking silent nodes OFFLINE. System code, keyed by
// node id; every change is published for the gpuNodeUpdated subscription.
import type { App } from '../../app.js';
import type { GpuInfo, NodeStatus } from './entity.js';
import type { GpuNodeRecord } from './service.js';

interface NodeRow {
  id: string;
  host: string;
  status: NodeStatus;
  gpus: GpuInfo[];
  slots: number;
  running_session_ids: string[];
  version: string | null;
  last_heartbeat_at: Date;
  created_at: Date;
}

const COLUMNS = 'id, host, status, gpus, slots, running_session_ids, version, last_heartbeat_at, created_at';

export function nodeFromRow(r: NodeRow): GpuNodeRecord {
  return {
    id: r.id,
    host: r.host,
    status: r.status,
    gpus: r.gpus,
    slots: r.slots,
    runningSessionIds: r.running_session_ids,
    version: r.version,
    lastHeartbeatAt: new Date(r.last_heartbeat_at),
    createdAt: new Date(r.created_at),
  };
}

export class NodeRegistry {
  constructor(private readonly app: App) {}

  async register(n: { nodeId: string; host: string; version?: string | null; slots: number; gpus: GpuInfo[] }) {
    const [row] = await this.app.sql.query<NodeRow>(
      `insert into gpu_nodes (id, host, status, gpus, slots, running_session_ids, version, last_heartbeat_at, created_at, updated_at)
       values (?, ?, 'ONLINE', ?, ?, '[]', ?, now(), now(), now())
       on conflict (id) do update set host = excluded.host, status = 'ONLINE', gpus = excluded.gpus, slots = excluded.slots,
         version = excluded.version, last_heartbeat_at = now(), updated_at = now()
       returning ${COLUMNS}`,
      [n.nodeId, n.host, JSON.stringify(n.gpus), n.slots, n.version ?? null],
    );
    this.app.publisher.nodeChanged(nodeFromRow(row));
  }

  /** False when the node is unknown (the database was reset): it registers again. */
  async heartbeat(n: { nodeId: string; status: 'ONLINE' | 'DRAINING'; gpus: GpuInfo[]; runningSessionIds: string[] }) {
    const [row] = await this.app.sql.query<NodeRow>(
      `update gpu_nodes set status = ?, gpus = ?, running_session_ids = ?, last_heartbeat_at = now(), updated_at = now()
       where id = ? returning ${COLUMNS}`,
      [n.status, JSON.stringify(n.gpus), JSON.stringify(n.runningSessionIds), n.nodeId],
    );
    if (!row) return false;
    this.app.publisher.nodeChanged(nodeFromRow(row));
    return true;
  }

  async touchRunning(nodeId: string) {
    await this.app.sql.query('update gpu_nodes set last_heartbeat_at = now() where id = ?', [nodeId]);
  }

  /** Nodes silent for longer than the offline window become OFFLINE; returns them. */
  async markSilentOffline(): Promise<GpuNodeRecord[]> {
    const rows = await this.app.sql.query<NodeRow>(
      `update gpu_nodes set status = 'OFFLINE', updated_at = now()
       where status <> 'OFFLINE' and last_heartbeat_at < now() - (? * interval '1 millisecond')
       returning ${COLUMNS}`,
      [this.app.config.nodeOfflineMs],
    );
    const nodes = rows.map(nodeFromRow);
    for (const n of nodes) this.app.publisher.nodeChanged(n);
    return nodes;
  }
}
