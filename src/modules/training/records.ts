// Training sessions as records: what services, subscriptions and the ingester pass around,
// mapped from an entity (after ORM writes) or from a raw row (hot reads, transitions).
import { jsonDate } from '../../db/rows.js';
import type { Provider } from '../compute/entity.js';
import type { StoredTrainingConfig } from './config.js';
import type { ArtifactKind, ITrainingSession, SessionAttempt, SessionStatus } from './entity.js';

export interface TrainingSessionRecord {
  id: string;
  organizationId: string;
  modelId: string;
  datasetVersionId: string;
  computeProfileId: string | null;
  createdById: string | null;
  status: SessionStatus;
  config: StoredTrainingConfig;
  provider: Provider | null;
  externalJobId: string | null;
  attempts: SessionAttempt[];
  currentEpoch: number;
  totalEpochs: number;
  progressFraction: number;
  attempt: number;
  retriesUsed: number;
  lastEventSeq: number;
  nodeId: string | null;
  storageProfileId: string | null;
  lastCheckpointKey: string | null;
  cancelRequestedAt: Date | null;
  errorMessage: string | null;
  errorExitCode: number | null;
  errorStderrTail: string | null;
  estimatedCostUsd: number | null;
  costUsd: number | null;
  createdAt: Date;
  updatedAt: Date;
  queuedAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface EpochMetricRecord {
  id: string;
  sessionId: string;
  epoch: number;
  metrics: Record<string, unknown>;
  createdAt: Date;
}

export interface ArtifactRecord {
  id: string;
  sessionId: string | null;
  kind: ArtifactKind;
  storageKey: string;
  sizeBytes: number;
  sha256: string;
  createdAt: Date;
}

export function sessionRecord(s: ITrainingSession): TrainingSessionRecord {
  return {
    id: s.id,
    organizationId: s.organization.id,
    modelId: s.model.id,
    datasetVersionId: s.datasetVersion.id,
    computeProfileId: s.computeProfile?.id ?? null,
    createdById: s.createdBy?.id ?? null,
    status: s.status,
    config: s.config as unknown as StoredTrainingConfig,
    provider: s.provider ?? null,
    externalJobId: s.externalJobId ?? null,
    attempts: s.attempts,
    currentEpoch: s.currentEpoch,
    totalEpochs: s.totalEpochs,
    progressFraction: Number(s.progressFraction ?? 0),
    attempt: s.attempt,
    retriesUsed: s.retriesUsed,
    lastEventSeq: s.lastEventSeq,
    nodeId: s.nodeId ?? null,
    storageProfileId: s.storageProfileId ?? null,
    lastCheckpointKey: s.lastCheckpointKey ?? null,
    cancelRequestedAt: s.cancelRequestedAt ?? null,
    errorMessage: s.errorMessage ?? null,
    errorExitCode: s.errorExitCode ?? null,
    errorStderrTail: s.errorStderrTail ?? null,
    estimatedCostUsd: s.estimatedCostUsd == null ? null : Number(s.estimatedCostUsd),
    costUsd: s.costUsd == null ? null : Number(s.costUsd),
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    queuedAt: s.queuedAt ?? null,
    startedAt: s.startedAt ?? null,
    finishedAt: s.finishedAt ?? null,
  };
}

// Raw rows of training_sessions, for the hot list path below.
export interface SessionRow {
  id: string;
  organization_id: string;
  model_id: string;
  dataset_version_id: string;
  compute_profile_id: string | null;
  created_by_id: string | null;
  status: SessionStatus;
  config: StoredTrainingConfig;
  provider: Provider | null;
  external_job_id: string | null;
  attempts: SessionAttempt[];
  current_epoch: number;
  total_epochs: number;
  progress_fraction: number;
  attempt: number;
  retries_used: number;
  last_event_seq: number;
  node_id: string | null;
  storage_profile_id: string | null;
  last_checkpoint_key: string | null;
  cancel_requested_at: Date | null;
  error_message: string | null;
  error_exit_code: number | null;
  error_stderr_tail: string | null;
  estimated_cost_usd: number | null;
  cost_usd: number | null;
  created_at: Date;
  updated_at: Date;
  queued_at: Date | null;
  started_at: Date | null;
  finished_at: Date | null;
}

export function sessionFromRow(r: SessionRow): TrainingSessionRecord {
  return {
    id: r.id,
    organizationId: r.organization_id,
    modelId: r.model_id,
    datasetVersionId: r.dataset_version_id,
    computeProfileId: r.compute_profile_id,
    createdById: r.created_by_id,
    status: r.status,
    config: r.config,
    provider: r.provider,
    externalJobId: r.external_job_id,
    attempts: r.attempts,
    currentEpoch: r.current_epoch,
    totalEpochs: r.total_epochs,
    progressFraction: Number(r.progress_fraction),
    attempt: r.attempt,
    retriesUsed: r.retries_used,
    lastEventSeq: r.last_event_seq,
    nodeId: r.node_id,
    storageProfileId: r.storage_profile_id,
    lastCheckpointKey: r.last_checkpoint_key,
    cancelRequestedAt: r.cancel_requested_at && new Date(r.cancel_requested_at),
    errorMessage: r.error_message,
    errorExitCode: r.error_exit_code,
    errorStderrTail: r.error_stderr_tail,
    estimatedCostUsd: r.estimated_cost_usd,
    costUsd: r.cost_usd,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
    queuedAt: r.queued_at && new Date(r.queued_at),
    startedAt: r.started_at && new Date(r.started_at),
    finishedAt: r.finished_at && new Date(r.finished_at),
  };
}

export const SESSION_COLUMNS =
  'id, organization_id, model_id, dataset_version_id, compute_profile_id, created_by_id, status, config, provider, ' +
  'external_job_id, attempts, current_epoch, total_epochs, progress_fraction, attempt, retries_used, last_event_seq, ' +
  'node_id, storage_profile_id, last_checkpoint_key, cancel_requested_at, error_message, error_exit_code, error_stderr_tail, ' +
  'estimated_cost_usd, cost_usd, created_at, updated_at, queued_at, started_at, finished_at';


// Rows of training_sessions read back from JSON (the session list reads its page as one JSON
// value, see TrainingService.list): the same values sessionFromRow makes, for the columns read.
const RECORD_KEYS = new Map<string, keyof TrainingSessionRecord>();
for (const col of SESSION_COLUMNS.split(', ')) {
  RECORD_KEYS.set(col, col.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase()) as keyof TrainingSessionRecord);
}
const DATE_COLUMNS = new Set(['cancel_requested_at', 'created_at', 'updated_at', 'queued_at', 'started_at', 'finished_at']);

/**
 * The `json_build_array` arguments for these columns. Timestamps travel as whole milliseconds
 * since the epoch: floor() keeps the milliseconds the driver's parser keeps (it drops the
 * microseconds), and new Date(number) costs far less than parsing the ISO text.
 */
export function sessionJsonColumns(columns: readonly string[]): string {
  return columns.map((c) => (DATE_COLUMNS.has(c) ? `floor(extract(epoch from ${c}) * 1000)` : c)).join(', ');
}

/** A timestamp column as sessionJsonColumns sends it. */
export function jsonMillis(value: number | string | null): Date | null {
  if (value == null) return null;
  // numeric infinity arrives as a string; the driver would have made it Infinity.
  return typeof value === 'number' ? new Date(value) : jsonDate(value);
}

/**
 * A converter from `json_build_array(sessionJsonColumns(columns))` values to records. With fewer
 * than all columns the records are partial: only resolvers whose fields need nothing else may see
 * them (selection.ts). Generated once per column list, so every record has one fixed shape; the
 * column names come from SESSION_COLUMNS only.
 */
export function sessionsFromJson(columns: readonly string[]): (values: unknown[]) => TrainingSessionRecord {
  const props = columns.map((c, i) => {
    const key = RECORD_KEYS.get(c);
    if (!key) throw new Error(`unknown training_sessions column ${c}`);
    return `${key}: ${DATE_COLUMNS.has(c) ? `millis(v[${i}])` : `v[${i}]`}`;
  });
  return new Function('millis', `return (v) => ({ ${props.join(', ')} });`)(jsonMillis) as (
    values: unknown[],
  ) => TrainingSessionRecord;
}
