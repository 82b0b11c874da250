import type { EntityManager } from '@mikro-orm/postgresql';
import type { App } from '../app.js';
import type { Config } from '../config.js';
import { AuthenticationError, ForbiddenError } from '../lib/errors.js';
import { resolvePrincipal, type Principal } from '../modules/orgs/principal.js';
import { hasRole, type Role } from '../modules/orgs/roles.js';
import { createServices, type Services } from './services.js';

/**
 * One per GraphQL operation (an HTTP request or a websocket subscription). Holds the forked
 * EntityManager, the caller's principal (resolved lazily, once), and the per-request services
 * whose DataLoaders batch and cache within this operation only.
 *
 * A plain object of closures rather than a class instance: graphql-yoga merges the context
 * into its own object, which would drop a class's prototype methods.
 */
export interface RequestContext {
  app: App;
  config: Config;
  em: EntityManager;
  services: Services;
  /** The caller, or null when the request carries no valid credentials. */
  principal(): Promise<Principal | null>;
  requirePrincipal(): Promise<Principal>;
  /** Role check for mutations; VIEWER can never mutate. */
  requireRole(minimum: Role, action: string): Promise<Principal>;
}

export function createRequestContext(
  app: App,
  auth: { authorization: string | null } | { principal: Promise<Principal | null> },
): RequestContext {
  const em = app.orm.em.fork({ clear: true, useContext: false }) as EntityManager;
  let principalPromise: Promise<Principal | null> | null = null;
  const lookup = () => ('principal' in auth ? auth.principal : resolvePrincipal(app, auth.authorization));
  const ctx: RequestContext = {
    app,
    config: app.config,
    em,
    services: undefined as unknown as Services,
    principal() {
      principalPromise ??= lookup().then((p) => {
        if (p) em.setFilterParams('org', { orgId: p.orgId });
        return p;
      });
      return principalPromise;
    },
    async requirePrincipal() {
      const p = await ctx.principal();
      if (!p) throw new AuthenticationError();
      return p;
    },
    async requireRole(minimum, action) {
      const p = await ctx.requirePrincipal();
      if (!hasRole(p.role, minimum)) {
        throw new ForbiddenError(`${action} needs role ${minimum} or higher; you are ${p.role}`);
      }
      return p;
    },
  };
  ctx.services = createServices(ctx);
  return ctx;
}
