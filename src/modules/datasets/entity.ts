import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { baseProperties, orgFilter } from '../../db/base.js';
import { MODEL_TASKS, type ModelTask } from '../models/entity.js';
import { Organization, User } from '../orgs/entity.js';

const p = defineEntity.properties;

export const DATASET_FORMATS = ['YOLO', 'COCO', 'IMAGE_FOLDER'] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];
export const DATASET_VERSION_STATUSES = ['UPLOADING', 'VALIDATING', 'READY', 'INVALID'] as const;
export type DatasetVersionStatus = (typeof DATASET_VERSION_STATUSES)[number];

export interface DatasetProblem {
  path: string;
  line: number | null;
  message: string;
}

export const Dataset = defineEntity({
  name: 'Dataset',
  tableName: 'datasets',
  filters: orgFilter,
  uniques: [{ properties: ['organization', 'name'] }],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade'),
    createdBy: () => p.manyToOne(User).nullable().deleteRule('set null'),
    name: p.string().length(120),
    description: p.text().nullable(),
    task: p.enum(MODEL_TASKS as unknown as ModelTask[]),
  },
});
export type IDataset = InferEntity<typeof Dataset>;

export const DatasetVersion = defineEntity({
  name: 'DatasetVersion',
  tableName: 'dataset_versions',
  filters: orgFilter,
  uniques: [{ properties: ['dataset', 'version'] }],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade').index(),
    dataset: () => p.manyToOne(Dataset).deleteRule('cascade'),
    version: p.integer(),
    format: p.enum(DATASET_FORMATS as unknown as DatasetFormat[]),
    filename: p.string().length(255),
    archiveKey: p.string().length(1024),
    // Which storage holds the archive: an organization's storage profile, or null for the platform's.
    storageProfileId: p.uuid().nullable(),
    sha256: p.string().length(64).nullable(),
    sizeBytes: p.bigint('number').nullable(),
    classNames: p.json<string[]>().nullable(),
    // Per split: { train: { images, boxes }, val: {...} }.
    splits: p.json<Record<string, { images: number; boxes?: number }>>().nullable(),
    status: p.enum(DATASET_VERSION_STATUSES as unknown as DatasetVersionStatus[]).default('UPLOADING'),
    problems: p.json<DatasetProblem[]>().nullable(),
    finalizedAt: p.datetime().nullable(),
  },
});
export type IDatasetVersion = InferEntity<typeof DatasetVersion>;
