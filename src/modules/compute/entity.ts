import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { baseProperties, orgFilter } from '../../db/base.js';
import { Organization } from '../orgs/entity.js';

const p = defineEntity.properties;

export const PROVIDERS = ['PLATFORM', 'SAGEMAKER', 'VERTEX_AI', 'AZURE_ML', 'KUBERNETES'] as const;
export type Provider = (typeof PROVIDERS)[number];
export const STRATEGIES = ['QUEUE', 'CHEAPEST', 'FASTEST', 'PREFERRED'] as const;
export type Strategy = (typeof STRATEGIES)[number];

export const ComputeProfile = defineEntity({
  name: 'ComputeProfile',
  tableName: 'compute_profiles',
  filters: orgFilter,
  uniques: [{ properties: ['organization', 'name'] }],
  indexes: [
    // At most one default profile per organization, enforced by the database, not just the service.
    {
      name: 'compute_profiles_one_default_per_org',
      expression:
        'create unique index "compute_profiles_one_default_per_org" on "compute_profiles" ("organization_id") where "is_default"',
    },
  ],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade'),
    name: p.string().length(120),
    provider: p.enum(PROVIDERS as unknown as Provider[]),
    strategy: p.enum(STRATEGIES as unknown as Strategy[]),
    config: p.json<Record<string, unknown>>(),
    // AES-256-GCM envelope "v1.<keyId>.<iv>.<ciphertext+tag>"; never leaves the service layer.
    credentialsCiphertext: p.text().nullable().lazy(true, false),
    credentialsHint: p.string().length(64).nullable(),
    fallbackProfileIds: p.json<string[]>(),
    maxConcurrentJobs: p.integer().nullable(),
    maxCostPerSessionUsd: p.double().nullable(),
    isDefault: p.boolean().default(false),
  },
});
export type IComputeProfile = InferEntity<typeof ComputeProfile>;
