// Per-request services, created on first use. Each holds its own DataLoaders, so caching and
// batching never outlive the request.
import { ComputeService } from '../modules/compute/service.js';
import { DatasetService } from '../modules/datasets/service.js';
import { ModelService } from '../modules/models/service.js';
import { NodeService } from '../modules/nodes/service.js';
import { OrgService } from '../modules/orgs/service.js';
import { StorageProfileService } from '../modules/storage/service.js';
import { TrainingService } from '../modules/training/service.js';
import type { RequestContext } from './context.js';

const factories = {
  orgs: (ctx: RequestContext) => new OrgService(ctx),
  models: (ctx: RequestContext) => new ModelService(ctx),
  datasets: (ctx: RequestContext) => new DatasetService(ctx),
  compute: (ctx: RequestContext) => new ComputeService(ctx),
  training: (ctx: RequestContext) => new TrainingService(ctx),
  nodes: (ctx: RequestContext) => new NodeService(ctx),
  storage: (ctx: RequestContext) => new StorageProfileService(ctx),
};

export type Services = { [K in keyof typeof factories]: ReturnType<(typeof factories)[K]> };

export function createServices(ctx: RequestContext): Services {
  const cache: Partial<Services> = {};
  const services = {} as Services;
  for (const name of Object.keys(factories) as (keyof Services)[]) {
    Object.defineProperty(services, name, {
      enumerable: true,
      get: () => (cache[name] ??= factories[name](ctx) as never),
    });
  }
  return services;
}
