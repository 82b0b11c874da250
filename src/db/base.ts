import { randomUUID } from 'node:crypto';
import { defineEntity } from '@mikro-orm/core';

const p = defineEntity.properties;

/** Columns every table has. UUIDs are generated in the app so ids exist before the insert. */
export const baseProperties = {
  id: p.uuid().primary().onCreate(() => randomUUID()),
  createdAt: p.datetime().onCreate(() => new Date()),
  updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
};

/**
 * The organization scope, in one place. Every organization-owned entity declares this filter;
 * a request's EntityManager fork sets `orgId`, so em.find/findOne/count/populate only ever see the
 * caller's rows. System code (ingester, monitor, migrations) forks with `filters: { org: false }`.
 * Raw SQL reads on hot paths cannot use it and add `organization_id = ?` themselves (see
 * orgScopedSql in src/db/scope.ts).
 */
export const orgFilter = {
  org: {
    name: 'org',
    cond: (args: { orgId?: string }) => {
      if (!args?.orgId) throw new Error('org filter used without an organization id');
      return { organization: args.orgId };
    },
    default: true,
  },
};
