// Applies one event envelope (schema/event-envelope.schema.json) to PostgreSQL, inside the
// caller's transaction, and says what to publish and queue once it has committed.
import { randomUUID } from 'node:crypto';
import type { SqlQuery } from '../db/sql.js';
import type { ArtifactKind } from '../modules/training/entity.js';
import { checkpointSlot } from '../modules/nodes/session-storage.js';
import { transition } from '../modules/training/lifecycle.js';
import { SESSION_COLUMNS, sessionFromRow, type SessionRow, type TrainingSessionRecord } from '../modules/training/records.js';
import type { EpochMetricRecord } from '../modules/training/service.js';
import type { Orchestrator } from '../orchestrator/orchestrator.js';
import type { AnyEnvelope as Envelope } from '../../protocol/index.js';


export interface Effects {
  /** The session after this event, when it changed in a way subscribers should see. */
  session: TrainingSessionRecord | null;
  epoch: EpochMetricRecord | null;
  /** A session queued again in this transaction, to hand to its provider after commit. */
  requeued: TrainingSessionRecord | null;
  /** Why the envelope changed nothing (stale attempt, replay, unknown session), for logs and tests. */
  ignored: string | null;
  /** Checkpoint objects a newer one of the same slot replaced: deleted from storage after commit. */
  obsolete: { organizationId: string; storageProfileId: string | null; keys: string[] } | null;
}

const ARTIFACT_KINDS: Record<string, ArtifactKind> = {
  weights: 'WEIGHTS',
  onnx: 'ONNX',
  metrics: 'METRICS',
  checkpoint: 'CHECKPOINT',
};

const none = (ignored: string): Effects => ({ session: null, epoch: null, requeued: null, ignored, obsolete: null });

export async function applyEnvelope(tx: SqlQuery, env: Envelope, orchestrator: Orchestrator): Promise<Effects> {
  const [row] = await tx.query<SessionRow>(`select ${SESSION_COLUMNS} from training_sessions where id = ? for update`, [
    env.sessionId,
  ]);
  if (!row) return none('unknown session');
  let session = sessionFromRow(row);
  // The attempt fences off a stale duplicate (a node presumed dead that still runs), and seq
  // drops replays after a Redis restart or a redelivery.
  if (env.attempt !== session.attempt) return none(`stale attempt ${env.attempt} (current ${session.attempt})`);
  if (env.seq <= session.lastEventSeq) return none(`replayed seq ${env.seq}`);
  await tx.query('update training_sessions set last_event_seq = ? where id = ?', [env.seq, session.id]);
  session = { ...session, lastEventSeq: env.seq };

  const effects: Effects = { session: null, epoch: null, requeued: null, ignored: null, obsolete: null };
  const e = env.event;
  const terminal = ['COMPLETED', 'FAILED', 'CANCELLED'].includes(session.status);

  if (env.source === 'trainer') {
    switch (e.type) {
      case 'started': {
        if (session.status === 'QUEUED') {
          effects.session = await transition(tx, session.id, 'RUNNING', { attempt: env.attempt, set: { nodeId: env.nodeId } });
        }
        break;
      }
      case 'progress': {
        const [r] = await tx.query<SessionRow>(
          `update training_sessions set progress_fraction = ?, updated_at = now() where id = ? returning ${SESSION_COLUMNS}`,
          [Number(e.fraction ?? 0), session.id],
        );
        effects.session = sessionFromRow(r);
        break;
      }
      case 'epoch': {
        const epoch = Number(e.epoch);
        const metrics = epochMetrics(e);
        // Unique (session, epoch): an epoch re-run after a resume keeps the first row, so the
        // stored history has no duplicate, and subscribers were sent it once.
        const inserted = await tx.query<{ id: string; created_at: Date }>(
          `insert into epoch_metrics (id, created_at, updated_at, organization_id, session_id, epoch, metrics)
           values (?, now(), now(), ?, ?, ?, ?) on conflict (session_id, epoch) do nothing returning id, created_at`,
          [randomUUID(), session.organizationId, session.id, epoch, JSON.stringify(metrics)],
        );
        if (inserted[0]) {
          effects.epoch = { id: inserted[0].id, sessionId: session.id, epoch, metrics, createdAt: new Date(inserted[0].created_at) };
        }
        const [r] = await tx.query<SessionRow>(
          `update training_sessions set current_epoch = greatest(current_epoch, ?),
             progress_fraction = greatest(progress_fraction, ?::float8 / greatest(total_epochs, 1)), updated_at = now()
           where id = ? returning ${SESSION_COLUMNS}`,
          [epoch, epoch, session.id],
        );
        effects.session = sessionFromRow(r);
        break;
      }
      case 'checkpoint': {
        if (!env.upload) break;
        const replaced = await replaceOlderCheckpoints(tx, session, env.upload.key);
        if (replaced.length) {
          effects.obsolete = { organizationId: session.organizationId, storageProfileId: session.storageProfileId, keys: replaced };
        }
        await upsertArtifact(tx, session, 'CHECKPOINT', env.upload);
        const [r] = await tx.query<SessionRow>(
          `update training_sessions set last_checkpoint_key = ?, updated_at = now() where id = ? returning ${SESSION_COLUMNS}`,
          [env.upload.key, session.id],
        );
        session = sessionFromRow(r);
        break;
      }
      case 'artifact': {
        if (!env.upload) break;
        await upsertArtifact(tx, session, ARTIFACT_KINDS[String(e.kind)] ?? 'METRICS', env.upload);
        break;
      }
      case 'completed': {
        if (terminal) break;
        effects.session = await transition(tx, session.id, 'COMPLETED', { attempt: env.attempt });
        if (effects.session) await createModelVersion(tx, effects.session, (e.metrics ?? {}) as Record<string, number>);
        break;
      }
      case 'stopped': {
        if (terminal) break;
        if (session.cancelRequestedAt) {
          effects.session = await transition(tx, session.id, 'CANCELLED', { attempt: env.attempt });
        }
        // Otherwise the node is giving the job back: its `given_back` event follows.
        break;
      }
      case 'failed': {
        if (terminal) break;
        effects.session = await failOrRetry(tx, session, orchestrator, effects, {
          errorMessage: String(e.message ?? 'the trainer failed'),
          errorExitCode: typeof e.exit_code === 'number' ? e.exit_code : null,
          errorStderrTail: typeof e.traceback_tail === 'string' ? e.traceback_tail : null,
        });
        break;
      }
      default:
        break; // warning: nothing to store
    }
    return effects;
  }

  // Node events: how the process ended when the trainer could not say so itself.
  switch (e.type) {
    case 'crashed': {
      if (terminal) {
        // The trainer's own `failed` came first; keep its message, add what the node saw.
        if (session.status === 'FAILED') {
          await tx.query(
            'update training_sessions set error_exit_code = coalesce(error_exit_code, ?), error_stderr_tail = ? where id = ?',
            [e.exitCode ?? null, String(e.stderrTail ?? ''), session.id],
          );
        }
        break;
      }
      if (session.cancelRequestedAt) {
        effects.session = await transition(tx, session.id, 'CANCELLED', { attempt: env.attempt });
        break;
      }
      // No exit code and no signal: the node could not start the trainer (download, archive).
      const message =
        e.exitCode == null && e.signal == null
          ? `The node could not start the trainer: ${String(e.stderrTail ?? '').slice(0, 500)}`
          : `The trainer crashed (${e.signal ? `signal ${e.signal}` : `exit code ${e.exitCode}`}) after its last event ${e.lastEventType ?? '(none)'}`;
      effects.session = await failOrRetry(tx, session, orchestrator, effects, {
        errorMessage: message,
        errorExitCode: typeof e.exitCode === 'number' ? e.exitCode : null,
        errorStderrTail: String(e.stderrTail ?? ''),
      });
      break;
    }
    case 'timed_out': {
      if (terminal) break;
      effects.session = await transition(tx, session.id, 'FAILED', {
        attempt: env.attempt,
        set: {
          errorMessage: `The job ran past its time limit (${e.afterSeconds} s) and was stopped`,
          errorStderrTail: String(e.stderrTail ?? ''),
        },
      });
      break;
    }
    case 'given_back': {
      if (terminal || session.status !== 'RUNNING') break;
      if (session.cancelRequestedAt) {
        effects.session = await transition(tx, session.id, 'CANCELLED', { attempt: env.attempt });
        break;
      }
      const requeued = await orchestrator.requeueInTx(tx, session, `node ${env.nodeId} gave the job back: ${e.reason}`, {
        checkpointKey: (e.checkpointKey as string | null) ?? session.lastCheckpointKey,
      });
      effects.session = requeued;
      effects.requeued = requeued;
      break;
    }
    default:
      break;
  }
  return effects;
}

async function failOrRetry(
  tx: SqlQuery,
  session: TrainingSessionRecord,
  orchestrator: Orchestrator,
  effects: Effects,
  error: { errorMessage: string; errorExitCode: number | null; errorStderrTail: string | null },
): Promise<TrainingSessionRecord | null> {
  const [profile] = session.computeProfileId
    ? await tx.query<{ config: Record<string, unknown> }>('select config from compute_profiles where id = ?', [
        session.computeProfileId,
      ])
    : [];
  const maxRetries = Number(profile?.config.maxRetries ?? 0);
  if (session.status === 'RUNNING' && session.retriesUsed < maxRetries) {
    const requeued = await orchestrator.requeueInTx(
      tx,
      session,
      `retry ${session.retriesUsed + 1} of ${maxRetries} after: ${error.errorMessage}`,
      { countRetry: true },
    );
    effects.requeued = requeued;
    return requeued;
  }
  return transition(tx, session.id, 'FAILED', { attempt: session.attempt, set: error });
}

function epochMetrics(e: Record<string, unknown>): Record<string, unknown> {
  return {
    train_loss: e.train_loss,
    losses: e.losses,
    ...(e.metrics as Record<string, unknown>),
    lr: e.lr,
    seconds: e.seconds,
    images_per_sec: e.images_per_sec,
    // Optional in the protocol (custom trainers may not measure it).
    ...(e.data_wait_fraction === undefined ? {} : { data_wait_fraction: e.data_wait_fraction }),
  };
}

/**
 * Checkpoint keys are unique per upload (session-storage.ts); the rows of older checkpoints in the
 * same slot (attempt and file name) go, and their keys are returned for deletion after commit.
 * last_checkpoint_key moves to the new key in the same transaction, so no resume can be pointed
 * at a deleted object.
 */
async function replaceOlderCheckpoints(tx: SqlQuery, session: TrainingSessionRecord, key: string): Promise<string[]> {
  const slot = checkpointSlot(key);
  if (!slot) return [];
  const rows = await tx.query<{ id: string; storage_key: string }>(
    `select id, storage_key from artifacts where session_id = ? and kind = 'CHECKPOINT' and storage_key <> ?`,
    [session.id, key],
  );
  const older = rows.filter((r) => checkpointSlot(r.storage_key) === slot);
  if (!older.length) return [];
  await tx.query('delete from artifacts where id = any(?::uuid[])', [older.map((r) => r.id)]);
  return older.map((r) => r.storage_key);
}

async function upsertArtifact(
  tx: SqlQuery,
  session: TrainingSessionRecord,
  kind: ArtifactKind,
  upload: { key: string; sha256: string; sizeBytes: number },
) {
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

async function createModelVersion(tx: SqlQuery, session: TrainingSessionRecord, metrics: Record<string, number>) {
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
