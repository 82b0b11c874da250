// The one place session statuses change. Services, the event ingester, the orchestrator, the
// node API and the reaper all call `transition`, so an impossible move (COMPLETED -> RUNNING)
// fails loudly instead of corrupting a session, and every change stamps the same timestamps.
import type { SqlQuery } from '../../db/sql.js';
import { ConflictError } from '../../lib/errors.js';
import type { DatasetRef } from '../../../protocol/index.js';
import type { StoredTrainingConfig } from './config.js';
import type { SessionAttempt, SessionStatus } from './entity.js';
import { SESSION_COLUMNS, sessionFromRow, type SessionRow, type TrainingSessionRecord } from './records.js';

const allowed: Record<SessionStatus, readonly SessionStatus[]> = {
  PENDING: ['QUEUED', 'FAILED', 'CANCELLED'],
  QUEUED: ['RUNNING', 'FAILED', 'CANCELLED'],
  RUNNING: ['COMPLETED', 'FAILED', 'CANCELLED', 'PREEMPTED', 'PAUSED_BUDGET', 'QUEUED'],
  PREEMPTED: ['QUEUED', 'FAILED', 'CANCELLED'],
  PAUSED_BUDGET: ['QUEUED', 'CANCELLED'],
  COMPLETED: [],
  FAILED: [],
  CANCELLED: [],
};

export const TERMINAL_STATUSES: readonly SessionStatus[] = ['COMPLETED', 'FAILED', 'CANCELLED'];

export function canTransition(from: SessionStatus, to: SessionStatus): boolean {
  return allowed[from].includes(to);
}

export function assertTransition(from: SessionStatus, to: SessionStatus): void {
  if (!canTransition(from, to)) throw new ConflictError(`A ${from} training session cannot become ${to}`);
}

// Columns a transition may set besides status; keys are fixed here so callers cannot inject SQL.
const SETTABLE = {
  attempt: 'attempt',
  retriesUsed: 'retries_used',
  lastEventSeq: 'last_event_seq',
  nodeId: 'node_id',
  provider: 'provider',
  externalJobId: 'external_job_id',
  computeProfileId: 'compute_profile_id',
  lastCheckpointKey: 'last_checkpoint_key',
  cancelRequestedAt: 'cancel_requested_at',
  errorMessage: 'error_message',
  errorExitCode: 'error_exit_code',
  errorStderrTail: 'error_stderr_tail',
  attempts: 'attempts',
} as const;

export type TransitionSet = Partial<Record<keyof typeof SETTABLE, unknown>>;

export interface TransitionOptions {
  /** Only act when the session is still on this attempt (events and claims of a stale attempt do nothing). */
  attempt?: number;
  /** Only act from these statuses; otherwise any status the rules allow. */
  from?: readonly SessionStatus[];
  set?: TransitionSet;
}

/**
 * Locks the row, checks the move, applies it with its timestamps and returns the new record,
 * or null when the session is gone, on another attempt, or not in `from`. A move the rules
 * forbid throws ConflictError. Call inside a transaction.
 */
export async function transition(
  tx: SqlQuery,
  sessionId: string,
  to: SessionStatus,
  opts: TransitionOptions = {},
): Promise<TrainingSessionRecord | null> {
  const [current] = await tx.query<{ status: SessionStatus; attempt: number }>(
    'select status, attempt from training_sessions where id = ? for update',
    [sessionId],
  );
  if (!current) return null;
  if (opts.attempt !== undefined && current.attempt !== opts.attempt) return null;
  if (opts.from && !opts.from.includes(current.status)) return null;
  assertTransition(current.status, to);
  const sets: string[] = ['status = ?', 'updated_at = now()'];
  const params: unknown[] = [to];
  if (to === 'QUEUED') sets.push('queued_at = now()');
  if (to === 'RUNNING') sets.push('started_at = coalesce(started_at, now())');
  if (TERMINAL_STATUSES.includes(to)) sets.push('finished_at = now()');
  for (const [key, value] of Object.entries(opts.set ?? {})) {
    const column = SETTABLE[key as keyof typeof SETTABLE];
    if (!column) throw new Error(`transition cannot set ${key}`);
    sets.push(`${column} = ?`);
    params.push(key === 'attempts' ? JSON.stringify(value) : value);
  }
  const [row] = await tx.query<SessionRow>(
    `update training_sessions set ${sets.join(', ')} where id = ? returning ${SESSION_COLUMNS}`,
    [...params, sessionId],
  );
  return sessionFromRow(row);
}

/**
 * Runs a session again on a new attempt (resume from its last checkpoint): after a node was
 * lost, a node gave the job back, or a crashed trainer has retries left. Call inside the
 * transaction that decided it; the orchestrator's `submitQueued` does the provider call after commit.
 */
export async function requeue(
  tx: SqlQuery,
  session: TrainingSessionRecord,
  reason: string,
  opts: { countRetry?: boolean; checkpointKey?: string | null } = {},
): Promise<TrainingSessionRecord | null> {
  const status: SessionStatus = session.status;
  if (status === 'RUNNING') {
    const pre = await transition(tx, session.id, 'PREEMPTED', { attempt: session.attempt, from: ['RUNNING'] });
    if (!pre) return null;
  } else if (status !== 'PREEMPTED') {
    return null;
  }
  const attempts: SessionAttempt[] = [
    ...session.attempts,
    { provider: session.provider ?? 'PLATFORM', profileId: session.computeProfileId, reason, at: new Date().toISOString(), ok: true },
  ];
  return transition(tx, session.id, 'QUEUED', {
    from: ['PREEMPTED'],
    set: {
      attempt: session.attempt + 1,
      retriesUsed: session.retriesUsed + (opts.countRetry ? 1 : 0),
      lastEventSeq: 0,
      nodeId: null,
      lastCheckpointKey: opts.checkpointKey ?? session.lastCheckpointKey,
      attempts,
    },
  });
}

/**
 * A RUNNING session that nothing runs any more (its node went silent, or no longer lists it):
 * cancelled when a cancel was pending, otherwise queued again on a new attempt. `requeued` says
 * the caller must hand it to its provider after commit.
 */
export async function recoverLost(
  tx: SqlQuery,
  session: TrainingSessionRecord,
  reason: string,
): Promise<{ session: TrainingSessionRecord | null; requeued: boolean }> {
  if (session.cancelRequestedAt) {
    return { session: await transition(tx, session.id, 'CANCELLED', { attempt: session.attempt, from: ['RUNNING'] }), requeued: false };
  }
  return { session: await requeue(tx, session, reason), requeued: true };
}

export interface NewSession {
  id: string;
  organizationId: string;
  createdById: string | null;
  modelId: string;
  datasetVersionId: string;
  config: StoredTrainingConfig;
  storageProfileId: string | null;
  /** What a job needs to know of the dataset (read with the version, so placing needs no extra query). */
  dataset: DatasetRef;
}

/**
 * Creates a session that leaves PENDING in the same statement: QUEUED once a provider accepted it,
 * or FAILED when none could. Saves the round trips of inserting PENDING and then moving it, on the
 * path that must reach hundreds of submissions per second; the move is checked like any other.
 */
export async function insertSession(
  tx: SqlQuery,
  s: NewSession,
  to: 'QUEUED' | 'FAILED',
  set: TransitionSet,
): Promise<TrainingSessionRecord> {
  assertTransition('PENDING', to);
  const columns = ['id', 'created_at', 'updated_at', 'organization_id', 'created_by_id', 'model_id', 'dataset_version_id',
    'status', 'config', 'total_epochs', 'storage_profile_id', to === 'QUEUED' ? 'queued_at' : 'finished_at'];
  const values: unknown[] = [s.id, s.organizationId, s.createdById, s.modelId, s.datasetVersionId, to, JSON.stringify(s.config),
    s.config.epochs, s.storageProfileId];
  // created_at in milliseconds: connection cursors carry it as a JS Date, and a microsecond left
  // in the column put a cursor just before its own row (test/session-cursors.test.ts).
  const placeholders = ['?', "date_trunc('milliseconds', now())", 'now()', '?', '?', '?', '?', '?', '?', '?', '?', 'now()'];
  for (const [key, value] of Object.entries({ attempts: [], ...set })) {
    const column = SETTABLE[key as keyof typeof SETTABLE];
    if (!column) throw new Error(`insertSession cannot set ${key}`);
    columns.push(column);
    placeholders.push('?');
    values.push(key === 'attempts' ? JSON.stringify(value) : value);
  }
  const [row] = await tx.query<SessionRow>(
    `insert into training_sessions (${columns.join(', ')}) values (${placeholders.join(', ')}) returning ${SESSION_COLUMNS}`,
    values,
  );
  return sessionFromRow(row);
}
