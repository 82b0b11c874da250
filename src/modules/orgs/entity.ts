import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { baseProperties, orgFilter } from '../../db/base.js';

const p = defineEntity.properties;

export const ROLES = ['OWNER', 'ADMIN', 'MEMBER', 'VIEWER'] as const;
export type Role = (typeof ROLES)[number];

export const Organization = defineEntity({
  name: 'Organization',
  tableName: 'organizations',
  properties: {
    ...baseProperties,
    name: p.string().length(120),
  },
});
export type IOrganization = InferEntity<typeof Organization>;

export const User = defineEntity({
  name: 'User',
  tableName: 'users',
  properties: {
    ...baseProperties,
    // Stored lower-cased; the unique index makes sign-up races safe.
    email: p.string().length(254).unique(),
    passwordHash: p.text().lazy(true, false),
    lastSignInAt: p.datetime().nullable(),
  },
});
export type IUser = InferEntity<typeof User>;

export const Membership = defineEntity({
  name: 'Membership',
  tableName: 'memberships',
  filters: orgFilter,
  uniques: [{ properties: ['organization', 'user'] }],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade'),
    user: () => p.manyToOne(User).deleteRule('cascade').index(),
    role: p.enum(ROLES as unknown as Role[]),
  },
});
export type IMembership = InferEntity<typeof Membership>;

export const ApiKey = defineEntity({
  name: 'ApiKey',
  tableName: 'api_keys',
  filters: orgFilter,
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade').index(),
    createdBy: () => p.manyToOne(User).nullable().deleteRule('set null'),
    name: p.string().length(120),
    role: p.enum(ROLES as unknown as Role[]),
    // Keys are random 256-bit secrets, so a single SHA-256 is enough (no stretching needed, unlike passwords).
    secretHash: p.string().length(64).lazy(true, false),
    // The key's first characters (prefix and part of its id, never of the secret), so users can tell keys apart.
    hint: p.string().length(16),
    persistedOnly: p.boolean().default(false),
    lastUsedAt: p.datetime().nullable(),
    revokedAt: p.datetime().nullable(),
  },
});
export type IApiKey = InferEntity<typeof ApiKey>;

/**
 * Bumped by database triggers (never by the app) whenever a transaction writes an organization's
 * rows; the response cache compares it (src/graphql/response-cache.ts). Declared here so the
 * migrator knows the table.
 */
export const OrgDataVersion = defineEntity({
  name: 'OrgDataVersion',
  tableName: 'org_data_versions',
  properties: {
    organizationId: p.uuid().primary(),
    version: p.bigint(),
  },
});
