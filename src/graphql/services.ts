// Per-request services, created on first use. Each holds its own DataLoaders, so caching and
// batching never outlive the request.
import { OrgService } from '../modules/orgs/service.js';
import type { RequestContext } from './context.js';

export interface Services {
  orgs: OrgService;
}

export function createServices(ctx: RequestContext): Services {
  const cache: Partial<Services> = {};
  return {
    get orgs() {
      return (cache.orgs ??= new OrgService(ctx));
    },
  };
}
