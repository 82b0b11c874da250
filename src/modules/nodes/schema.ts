import { builder } from '../../graphql/builder.js';
import { NODE_STATUSES, type GpuInfo } from './entity.js';
import type { GpuNodeRecord } from './service.js';
import { reviveDates } from '../../events/publisher.js';
import { reauthorized } from '../training/subscriptions.js';

const NodeStatusEnum = builder.enumType('GpuNodeStatus', { values: NODE_STATUSES });

const GpuRef = builder.objectRef<GpuInfo>('Gpu').implement({
  fields: (t) => ({
    index: t.exposeInt('index'),
    name: t.exposeString('name'),
    uuid: t.exposeString('uuid', { nullable: true }),
    memoryTotalMiB: t.exposeInt('memoryTotalMiB', { nullable: true }),
    memoryUsedMiB: t.exposeInt('memoryUsedMiB', { nullable: true }),
    utilizationPct: t.exposeFloat('utilizationPct', { nullable: true }),
    temperatureC: t.exposeFloat('temperatureC', { nullable: true }),
    powerW: t.exposeFloat('powerW', { nullable: true }),
  }),
});

export const GpuNodeRef = builder.objectRef<GpuNodeRecord>('GpuNode').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    host: t.exposeString('host'),
    status: t.expose('status', { type: NodeStatusEnum }),
    gpus: t.field({ type: [GpuRef], resolve: (n) => n.gpus }),
    slots: t.exposeInt('slots', { description: 'Jobs it runs at once: one per GPU, or one CPU slot.' }),
    runningJobs: t.int({ resolve: (n) => n.runningSessionIds.length }),
    version: t.exposeString('version', { nullable: true }),
    lastHeartbeatAt: t.expose('lastHeartbeatAt', { type: 'DateTime' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

builder.queryFields((t) => ({
  gpuNodes: t.field({ type: [GpuNodeRef], resolve: (_r, _a, ctx) => ctx.services.nodes.list() }),
}));

builder.subscriptionFields((t) => ({
  gpuNodeUpdated: t.field({
    type: GpuNodeRef,
    description: 'Every registration, heartbeat and status change of a platform GPU node.',
    subscribe: async function* (_r, _a, ctx) {
      await ctx.requirePrincipal();
      const live = await ctx.app.topics.subscribe<GpuNodeRecord>(ctx.app.redisNames.nodesTopic, { signal: ctx.signal });
      try {
        for await (const node of reauthorized(ctx, live)) yield reviveDates(node, ['lastHeartbeatAt', 'createdAt']);
      } finally {
        await live.return();
      }
    },
    resolve: (node) => node,
  }),
}));
