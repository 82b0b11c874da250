import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { baseProperties, orgFilter } from '../../db/base.js';
import { ComputeProfile, PROVIDERS, type Provider } from '../compute/entity.js';
import { DatasetVersion } from '../datasets/entity.js';
import { Model, ModelVersion } from '../models/entity.js';
import { Organization, User } from '../orgs/entity.js';

const p = defineEntity.properties;

export const SESSION_STATUSES = [
  'PENDING',
  'QUEUED',
  'RUNNING',
  'PREEMPTED',
  'PAUSED_BUDGET',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

export interface SessionAttempt {
  provider: Provider;
  profileId: string | null;
  reason: string;
  at: string;
  ok: boolean;
}

export const ARTIFACT_KINDS = ['CHECKPOINT', 'WEIGHTS', 'ONNX', 'METRICS', 'LOGS'] as const;
export type ArtifactKind = (typeof ARTIFACT_KINDS)[number];

export const TrainingSession = defineEntity({
  name: 'TrainingSession',
  tableName: 'training_sessions',
  filters: orgFilter,
  indexes: [
    // The session list is newest first, per organization; this index serves it and its cursor.
    { properties: ['organization', 'createdAt', 'id'] },
    { properties: ['organization', 'status'] },
    { properties: ['model', 'createdAt'] },
    // Running sessions by node: every heartbeat and every reaper round (each second) ask for
    // them across organizations; without it both read the whole table.
    {
      name: 'training_sessions_running_node_id',
      expression:
        'create index "training_sessions_running_node_id" on "training_sessions" ("node_id") where "status" = \'RUNNING\'',
    },
  ],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade'),
    createdBy: () => p.manyToOne(User).nullable().deleteRule('set null'),
    model: () => p.manyToOne(Model).deleteRule('cascade'),
    datasetVersion: () => p.manyToOne(DatasetVersion).deleteRule('cascade').index(),
    computeProfile: () => p.manyToOne(ComputeProfile).nullable().deleteRule('set null').index(),
    status: p.enum(SESSION_STATUSES as unknown as SessionStatus[]).default('PENDING'),
    // The validated TrainingConfig (snake_case keys, as the trainer's run.json expects them).
    config: p.json<Record<string, unknown>>(),
    provider: p.enum(PROVIDERS as unknown as Provider[]).nullable(),
    externalJobId: p.string().length(255).nullable(),
    attempts: p.json<SessionAttempt[]>(),
    currentEpoch: p.integer().default(0),
    totalEpochs: p.integer(),
    // Share of all training batches done, from the trainer's throttled progress events.
    progressFraction: p.double().default(0),
    // Each time the session is handed to a provider again (resume, retry) the attempt grows; the
    // attempt is the fence that keeps a stale duplicate job from running or writing events.
    attempt: p.integer().default(0),
    retriesUsed: p.integer().default(0),
    // The last ingested event of the current attempt: replays at or below it are dropped.
    lastEventSeq: p.integer().default(0),
    nodeId: p.string().length(128).nullable(),
    // Where checkpoints and artifacts go: the organization's default storage when the session began.
    storageProfileId: p.uuid().nullable(),
    lastCheckpointKey: p.string().length(1024).nullable(),
    cancelRequestedAt: p.datetime().nullable(),
    errorMessage: p.text().nullable(),
    errorExitCode: p.integer().nullable(),
    errorStderrTail: p.text().nullable(),
    estimatedCostUsd: p.double().nullable(),
    costUsd: p.double().nullable(),
    queuedAt: p.datetime().nullable(),
    startedAt: p.datetime().nullable(),
    finishedAt: p.datetime().nullable(),
  },
});
export type ITrainingSession = InferEntity<typeof TrainingSession>;

export const EpochMetric = defineEntity({
  name: 'EpochMetric',
  tableName: 'epoch_metrics',
  filters: orgFilter,
  // Ingestion is idempotent on this key: a redelivered event cannot create a second row.
  uniques: [{ properties: ['session', 'epoch'] }],
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade').index(),
    session: () => p.manyToOne(TrainingSession).deleteRule('cascade'),
    epoch: p.integer(),
    metrics: p.json<Record<string, unknown>>(),
  },
});
export type IEpochMetric = InferEntity<typeof EpochMetric>;

export const Artifact = defineEntity({
  name: 'Artifact',
  tableName: 'artifacts',
  filters: orgFilter,
  properties: {
    ...baseProperties,
    organization: () => p.manyToOne(Organization).deleteRule('cascade').index(),
    session: () => p.manyToOne(TrainingSession).nullable().deleteRule('cascade').index(),
    modelVersion: () => p.manyToOne(ModelVersion).nullable().deleteRule('set null').index(),
    kind: p.enum(ARTIFACT_KINDS as unknown as ArtifactKind[]),
    storageKey: p.string().length(1024),
    sizeBytes: p.bigint('number'),
    sha256: p.string().length(64),
  },
});
export type IArtifact = InferEntity<typeof Artifact>;
