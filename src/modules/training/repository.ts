// The statements on training_sessions, epoch_metrics and session artifacts that the training
// module's callers outside a request need (the event ingester, the orchestrator, the reaper, the
// node API). Status changes go through lifecycle.ts; the request-scoped reads stay in service.ts.
// Each statement is the one its caller ran before it moved here: the hot paths (ingest, heartbeat,
// reaper) keep their shapes and their prepared-statement text.
import { randomUUID } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { SqlQuery } from '../../db/sql.js';
import { TrainingSession, type ArtifactKind, type SessionAttempt } from './entity.js';
import {
  SESSION_COLUMNS,
  sessionFromRow,
  type EpochMetricRecord,
  type SessionRow,
  type TrainingSessionRecord,
} from './records.js';

/** Locks the session row for the rest of the transaction (events of one session apply in order). */
export async function lockSession(tx: SqlQuery, id: string): Promise<TrainingSessionRecord | null> {
  const [row] = await tx.query<SessionRow>(`select ${SESSION_COLUMNS} from training_sessions where id = ? for update`, [id]);
  return row ? sessionFromRow(row) : null;
}

export async function setLastEventSeq(tx: SqlQuery, id: string, seq: number): Promise<void> {
  await tx.query('update training_sessions set last_event_seq = ? where id = ?', [seq, id]);
}

export async function setProgress(tx: SqlQuery, id: string, fraction: number): Promise<TrainingSessionRecord> {
  const [r] = await tx.query<SessionRow>(
    `update training_sessions set progress_fraction = ?, updated_at = now() where id = ? returning ${SESSION_COLUMNS}`,
    [fraction, id],
  );
  return sessionFromRow(r);
}

/**
 * Unique (session, epoch): an epoch re-run after a resume keeps the first row, so the stored
 * history has no duplicate; null when the epoch was already stored.
 */
export async function insertEpoch(
  tx: SqlQuery,
  session: { id: string; organizationId: string },
  epoch: number,
  metrics: Record<string, unknown>,
): Promise<EpochMetricRecord | null> {
  const inserted = await tx.query<{ id: string; created_at: Date }>(
    `insert into epoch_metrics (id, created_at, updated_at, organization_id, session_id, epoch, metrics)
           values (?, now(), now(), ?, ?, ?, ?) on conflict (session_id, epoch) do nothing returning id, created_at`,
    [randomUUID(), session.organizationId, session.id, epoch, JSON.stringify(metrics)],
  );
  if (!inserted[0]) return null;
  return { id: inserted[0].id, sessionId: session.id, epoch, metrics, createdAt: new Date(inserted[0].created_at) };
}

/** Progress moves forward only: an epoch replayed after a resume does not take it back. */
export async function advanceEpoch(tx: SqlQuery, id: string, epoch: number): Promise<TrainingSessionRecord> {
  const [r] = await tx.query<SessionRow>(
    `update training_sessions set current_epoch = greatest(current_epoch, ?),
             progress_fraction = greatest(progress_fraction, ?::float8 / greatest(total_epochs, 1)), updated_at = now()
           where id = ? returning ${SESSION_COLUMNS}`,
    [epoch, epoch, id],
  );
  return sessionFromRow(r);
}

export async function setLastCheckpoint(tx: SqlQuery, id: string, key: string): Promise<TrainingSessionRecord> {
  const [r] = await tx.query<SessionRow>(
    `update training_sessions set last_checkpoint_key = ?, updated_at = now() where id = ? returning ${SESSION_COLUMNS}`,
    [key, id],
  );
  return sessionFromRow(r);
}

/** The node's own account of a crash, added to a session its trainer already failed. */
export async function addCrashDetails(tx: SqlQuery, id: string, exitCode: unknown, stderrTail: string): Promise<void> {
  await tx.query(
    'update training_sessions set error_exit_code = coalesce(error_exit_code, ?), error_stderr_tail = ? where id = ?',
    [exitCode, stderrTail, id],
  );
}

/** The session's checkpoint artifacts other than `key`. */
export async function otherCheckpoints(tx: SqlQuery, sessionId: string, key: string): Promise<{ id: string; storage_key: string }[]> {
  return tx.query<{ id: string; storage_key: string }>(
    `select id, storage_key from artifacts where session_id = ? and kind = 'CHECKPOINT' and storage_key <> ?`,
    [sessionId, key],
  );
}

export async function deleteArtifacts(tx: SqlQuery, ids: string[]): Promise<void> {
  await tx.query('delete from artifacts where id = any(?::uuid[])', [ids]);
}

/** An upload reported twice (a redelivered event) updates its row instead of adding one. */
export async function upsertArtifact(
  tx: SqlQuery,
  session: { id: string; organizationId: string },
  kind: ArtifactKind,
  upload: { key: string; sha256: string; sizeBytes: number },
): Promise<void> {
  const [existing] = await tx.query<{ id: string }>('select id from artifacts where session_id = ? and storage_key = ?', [
    session.id,
    upload.key,
  ]);
  if (existing) {
    await tx.query('update artifacts set size_bytes = ?, sha256 = ?, updated_at = now() where id = ?', [
      upload.sizeBytes,
      upload.sha256,
      existing.id,
    ]);
  } else {
    await tx.query(
      `insert into artifacts (id, created_at, updated_at, organization_id, session_id, kind, storage_key, size_bytes, sha256)
       values (?, now(), now(), ?, ?, ?, ?, ?, ?)`,
      [randomUUID(), session.organizationId, session.id, kind, upload.key, upload.sizeBytes, upload.sha256],
    );
  }
}

/** The model version a completed session makes, with its weights, ONNX and metrics artifacts. */
export async function createModelVersion(tx: SqlQuery, session: TrainingSessionRecord, metrics: Record<string, number>): Promise<void> {
  // One version per successful session; the model row lock serialises version numbers.
  await tx.query('select id from models where id = ? for update', [session.modelId]);
  const [{ n }] = await tx.query<{ n: number }>(
    'select coalesce(max(version), 0) + 1 as n from model_versions where model_id = ?',
    [session.modelId],
  );
  const id = randomUUID();
  await tx.query(
    `insert into model_versions (id, created_at, updated_at, organization_id, model_id, version, session_id, metrics)
     values (?, now(), now(), ?, ?, ?, ?, ?)`,
    [id, session.organizationId, session.modelId, n, session.id, JSON.stringify(metrics)],
  );
  await tx.query(
    `update artifacts set model_version_id = ? where session_id = ? and kind in ('WEIGHTS', 'ONNX', 'METRICS')`,
    [id, session.id],
  );
}

/** The checksum of a stored checkpoint, for the node that resumes from it. */
export async function checkpointSha256(q: SqlQuery, sessionId: string, key: string): Promise<string | null> {
  const [checkpoint] = await q.query<{ sha256: string }>('select sha256 from artifacts where session_id = ? and storage_key = ?', [
    sessionId,
    key,
  ]);
  return checkpoint?.sha256 ?? null;
}

/** A node heartbeat's view of its sessions: those still RUNNING on it, and whether a cancel waits. */
export async function runningOnNode(q: SqlQuery, nodeId: string): Promise<{ id: string; attempt: number; cancel: boolean }[]> {
  return q.query<{ id: string; attempt: number; cancel: boolean }>(
    `select id, attempt, cancel_requested_at is not null as cancel from training_sessions
         where node_id = ? and status = 'RUNNING'`,
    [nodeId],
  );
}

/** What an upload request is checked against and where its key goes. */
export async function uploadTarget(
  q: SqlQuery,
  sessionId: string,
): Promise<{ id: string; organization_id: string; attempt: number; node_id: string | null; storage_profile_id: string | null } | null> {
  const [row] = await q.query<{
    id: string;
    organization_id: string;
    attempt: number;
    node_id: string | null;
    storage_profile_id: string | null;
  }>('select id, organization_id, attempt, node_id, storage_profile_id from training_sessions where id = ?', [sessionId]);
  return row ?? null;
}

/**
 * RUNNING platform sessions whose node is OFFLINE (or none), left alone for the offline window:
 * also those on nodes found OFFLINE earlier (an API restart between the reaper's two steps).
 */
export async function runningOnLostNodes(q: SqlQuery, offlineMs: number): Promise<TrainingSessionRecord[]> {
  const rows = await q.query<SessionRow>(
    `select ${SESSION_COLUMNS} from training_sessions
         where status = 'RUNNING' and provider = 'PLATFORM'
           and (node_id is null or node_id in (select id from gpu_nodes where status = 'OFFLINE'))
           and updated_at < now() - (? * interval '1 millisecond')`,
    [offlineMs],
  );
  return rows.map(sessionFromRow);
}

/**
 * RUNNING platform sessions a live node has stopped listing: a heartbeat lists the node's claimed
 * jobs, and one sent while a claim was answered may miss it; a heartbeat that still misses it the
 * offline window after the session last changed (claim, progress, epochs) means the node does not run it.
 */
export async function droppedByLiveNodes(q: SqlQuery, offlineMs: number): Promise<TrainingSessionRecord[]> {
  const rows = await q.query<SessionRow>(
    `select ${SESSION_COLUMNS} from training_sessions s
         where s.status = 'RUNNING' and s.provider = 'PLATFORM'
           and exists (select 1 from gpu_nodes n where n.id = s.node_id and n.status <> 'OFFLINE'
                        and n.last_heartbeat_at > s.updated_at + (? * interval '1 millisecond')
                        and not n.running_session_ids @> jsonb_build_array(s.id::text))`,
    [offlineMs],
  );
  return rows.map(sessionFromRow);
}

/** Sessions that count against a compute profile's concurrency limit. */
export async function countActiveOnProfile(q: SqlQuery, profileId: string): Promise<number> {
  const [row] = await q.query<{ n: string }>(
    `select count(*) as n from training_sessions where compute_profile_id = ? and status in ('QUEUED', 'RUNNING', 'PREEMPTED')`,
    [profileId],
  );
  return Number(row.n);
}

// Sessions that have not finished: a compute profile they use cannot be deleted.
const UNFINISHED_STATUSES = ['PENDING', 'QUEUED', 'RUNNING', 'PREEMPTED', 'PAUSED_BUDGET'] as const;

/** Unfinished sessions of a compute profile, through the request's entity manager (its organization filter applies). */
export async function countUnfinishedOnProfile(em: EntityManager, computeProfileId: string): Promise<number> {
  return em.count(TrainingSession, { computeProfile: computeProfileId, status: { $in: [...UNFINISHED_STATUSES] } });
}

/** Sessions that keep files in a storage profile (it cannot be deleted while any do). */
export async function countInStorageProfile(q: SqlQuery, storageProfileId: string): Promise<number> {
  const [row] = await q.query<{ n: string }>('select count(*) as n from training_sessions where storage_profile_id = ?', [
    storageProfileId,
  ]);
  return Number(row.n);
}

/** A QUEUED session whose submission failed moves to the next candidate. */
export async function moveQueuedToCandidate(
  tx: SqlQuery,
  id: string,
  c: { provider: string; computeProfileId: string | null; externalJobId: string | null; attempts: SessionAttempt[] },
): Promise<TrainingSessionRecord | null> {
  const [row] = await tx.query<SessionRow>(
    `update training_sessions set provider = ?, compute_profile_id = ?, external_job_id = ?, attempts = ?, updated_at = now()
             where id = ? and status = 'QUEUED' returning ${SESSION_COLUMNS}`,
    [c.provider, c.computeProfileId, c.externalJobId, JSON.stringify(c.attempts), id],
  );
  return row ? sessionFromRow(row) : null;
}

/** The provider's job id for a first attempt, when it differs from the predicted one. */
export async function setFirstExternalJobId(q: SqlQuery, id: string, externalJobId: string): Promise<TrainingSessionRecord | null> {
  const [updated] = await q.query<SessionRow>(
    `update training_sessions set external_job_id = ?, updated_at = now() where id = ? and attempt = 1 returning ${SESSION_COLUMNS}`,
    [externalJobId, id],
  );
  return updated ? sessionFromRow(updated) : null;
}

/** The provider's job id for a later attempt (after a requeue); a newer attempt is left alone. */
export async function setExternalJobId(q: SqlQuery, id: string, attempt: number, externalJobId: string): Promise<void> {
  await q.query('update training_sessions set external_job_id = ? where id = ? and attempt = ?', [externalJobId, id, attempt]);
}
