import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { baseProperties, orgFilter } from '../../db/base.js';
import { Organization, User } from '../orgs/entity.js';

const p = defineEntity.properties;

export const MODEL_TASKS = ['OBJECT_DETECTION', 'CLASSIFICATION'] as const;
export type ModelTask = (typeof MODEL_TASKS)[number];
export const MODEL_FRAMEWORKS = ['TORCHVISION', 'ULTRALYTICS', 'TRANSFORMERS', 'CUSTOM', 'CVTRAIN'] as const;
export type ModelFramework = (typeof MODEL_FRAMEWORKS)[number];

export const Model = defineEntity({
  name: 'Model',
  tableName: 'models',
  filters: orgFilter,
  uniques: [{ properties: ['organization', 'name'] }],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade'),
    createdBy: () => p.manyToOne(User).nullable().deleteRule('set null'),
    name: p.string().length(120),
    description: p.text().nullable(),
    task: p.enum(MODEL_TASKS as unknown as ModelTask[]),
    framework: p.enum(MODEL_FRAMEWORKS as unknown as ModelFramework[]),
    architecture: p.string().length(120),
    archivedAt: p.datetime().nullable(),
  },
});
export type IModel = InferEntity<typeof Model>;

export const ModelVersion = defineEntity({
  name: 'ModelVersion',
  tableName: 'model_versions',
  filters: orgFilter,
  uniques: [{ properties: ['model', 'version'] }],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade').index(),
    model: () => p.manyToOne(Model).deleteRule('cascade'),
    version: p.integer(),
    // The session that produced it; a plain id so deleting old sessions never loses a version.
    sessionId: p.uuid().nullable(),
    metrics: p.json<Record<string, number>>(),
  },
});
export type IModelVersion = InferEntity<typeof ModelVersion>;
