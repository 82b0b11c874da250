import type { RequestContext } from '../../graphql/context.js';
import { GpuNode, type GpuInfo, type NodeStatus } from './entity.js';

export interface GpuNodeRecord {
  id: string;
  host: string;
  status: NodeStatus;
  gpus: GpuInfo[];
  slots: number;
  runningSessionIds: string[];
  version: string | null;
  lastHeartbeatAt: Date;
  createdAt: Date;
}

export class NodeService {
  constructor(private readonly ctx: RequestContext) {}

  /** Platform GPU machines are shared; any signed-in caller may see them, newest heartbeat first. */
  async list(): Promise<GpuNodeRecord[]> {
    await this.ctx.requirePrincipal();
    const nodes = await this.ctx.em.find(GpuNode, {}, { orderBy: { lastHeartbeatAt: 'desc' } });
    return nodes.map((n) => ({
      id: n.id,
      host: n.host,
      status: n.status,
      gpus: n.gpus,
      slots: n.slots,
      runningSessionIds: n.runningSessionIds,
      version: n.version ?? null,
      lastHeartbeatAt: n.lastHeartbeatAt,
      createdAt: n.createdAt,
    }));
  }
}
