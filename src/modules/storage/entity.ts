import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { baseProperties, orgFilter } from '../../db/base.js';
import { Organization } from '../orgs/entity.js';

const p = defineEntity.properties;

export const STORAGE_PROFILE_KINDS = ['S3', 'AZURE'] as const;
export type StorageProfileKind = (typeof STORAGE_PROFILE_KINDS)[number];

/**
 * An organization's own bucket or container ("bring your own storage"). The default profile, if
 * any, receives the organization's new datasets and artifacts; without one the platform's
 * storage does. Objects keep the "orgs/<organizationId>/" key prefix either way.
 */
export const StorageProfile = defineEntity({
  name: 'StorageProfile',
  tableName: 'storage_profiles',
  filters: orgFilter,
  uniques: [{ properties: ['organization', 'name'] }],
  indexes: [
    // At most one default per organization, enforced by the database, not just the service.
    {
      name: 'storage_profiles_one_default_per_org',
      expression:
        'create unique index "storage_profiles_one_default_per_org" on "storage_profiles" ("organization_id") where "is_default"',
    },
  ],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade'),
    name: p.string().length(120),
    kind: p.enum(STORAGE_PROFILE_KINDS as unknown as StorageProfileKind[]),
    // Bucket/container, region, endpoint: nothing secret (see profile-config.ts).
    config: p.json<Record<string, unknown>>(),
    // AES-256-GCM envelope "v1.<keyId>.<iv>.<ciphertext+tag>" bound to this row; never leaves the service layer.
    credentialsCiphertext: p.text().lazy(true, false),
    credentialsHint: p.string().length(64),
    isDefault: p.boolean().default(false),
  },
});
export type IStorageProfile = InferEntity<typeof StorageProfile>;
