import { defineEntity, type InferEntity } from '@mikro-orm/core';

const p = defineEntity.properties;

export const NODE_STATUSES = ['ONLINE', 'DRAINING', 'OFFLINE'] as const;
export type NodeStatus = (typeof NODE_STATUSES)[number];

export interface GpuInfo {
  index: number;
  name: string;
  uuid: string | null;
  memoryTotalMiB: number | null;
  memoryUsedMiB: number | null;
  utilizationPct: number | null;
  temperatureC: number | null;
  powerW: number | null;
}

/** Platform GPU machines. Shared by the platform, so not organization-owned. */
export const GpuNode = defineEntity({
  name: 'GpuNode',
  tableName: 'gpu_nodes',
  properties: {
    // Chosen by the node (stable across restarts of the same machine).
    id: p.string().length(128).primary(),
    host: p.string().length(255),
    status: p.enum(NODE_STATUSES as unknown as NodeStatus[]).default('ONLINE'),
    gpus: p.json<GpuInfo[]>(),
    slots: p.integer(),
    runningSessionIds: p.json<string[]>(),
    version: p.string().length(64).nullable(),
    lastHeartbeatAt: p.datetime(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});
export type IGpuNode = InferEntity<typeof GpuNode>;
