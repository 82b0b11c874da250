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
  /**
   * Checks the credentials again (not the per-request memo): long-lived subscriptions call it so
   * a revoked key or a removed member stops receiving data.
   */
  stillAuthorized(): Promise<boolean>;
  /**
   * Aborted when the operation ends (over websockets: the client completes it or its socket
   * closes); live streams pass it to topics.subscribe so they end at once, not at their next message.
   */
  signal?: AbortSignal;
  /** The client's address (see clientAddress in src/lib/rate-limit.ts); null where unknown. */
  clientAddress: string | null;
  /** A rate limit refused part of this request: HTTP responses carry it as Retry-After. */
  noteRetryAfter(seconds: number): void;
}

export function createRequestContext(
  app: App,
  auth: {
    authorization: string | null;
    principal?: Promise<Principal | null>;
    clientAddress?: string | null;
    noteRetryAfter?: (seconds: number) => void;
  },
): RequestContext {
  // Forking an EntityManager is not free and many requests (lists, node lookups) never use one.
  let em: EntityManager | null = null;
  let principalPromise: Promise<Principal | null> | null = null;
  let resolved: Principal | null = null;
  const lookup = () => auth.principal ?? resolvePrincipal(app, auth.authorization);
  const ctx = {
    app,
    config: app.config,
    services: undefined as unknown as Services,
    clientAddress: auth.clientAddress ?? null,
    noteRetryAfter: auth.noteRetryAfter ?? (() => undefined),
    principal() {
      principalPromise ??= lookup().then((p) => {
        resolved = p;
        if (p && em) em.setFilterParams('org', { orgId: p.orgId });
        return p;
      });
      return principalPromise;
    },
    async requirePrincipal() {
      const p = await ctx.principal();
      if (!p) throw new AuthenticationError();
      return p;
    },
    async stillAuthorized() {
      const before = await ctx.principal();
      if (!before) return false;
      const now = await resolvePrincipal(app, auth.authorization);
      return now !== null && now.orgId === before.orgId;
    },
    async requireRole(minimum, action) {
      const p = await ctx.requirePrincipal();
      if (!hasRole(p.role, minimum)) {
        throw new ForbiddenError(`${action} needs role ${minimum} or higher; you are ${p.role}`);
      }
      return p;
    },
  } as RequestContext;
  // Non-enumerable, so graphql-yoga's context merge does not call the getter (and fork) eagerly.
  Object.defineProperty(ctx, 'em', {
    enumerable: false,
    get() {
      if (!em) {
        em = app.orm.em.fork({ clear: true, useContext: false }) as EntityManager;
        if (resolved) em.setFilterParams('org', { orgId: resolved.orgId });
      }
      return em;
    },
  });
  ctx.services = createServices(ctx);
  return ctx;
}
