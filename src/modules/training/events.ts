// What a session's events mean: applies one event envelope (schema/event-envelope.schema.json)
// to PostgreSQL, inside the caller's transaction, and says what to publish and queue once it has
// committed. The ingester (src/events/ingester.ts) only reads, validates, commits and acknowledges.
import type { SqlQuery } from '../../db/sql.js';
import type { AnyEnvelope as Envelope } from '../../../protocol/index.js';
import { checkpointSlot } from '../nodes/session-storage.js';
import type { ArtifactKind } from './entity.js';
import { requeue, transition } from './lifecycle.js';
import type { EpochMetricRecord, TrainingSessionRecord } from './records.js';
import {
  addCrashDetails,
  advanceEpoch,
  createModelVersion,
  deleteArtifacts,
  insertEpoch,
  lockSession,
  otherCheckpoints,
  setLastCheckpoint,
  setLastEventSeq,
  setProgress,
  upsertArtifact,
} from './repository.js';


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

export async function applyEnvelope(tx: SqlQuery, env: Envelope): Promise<Effects> {
  const locked = await lockSession(tx, env.sessionId);
  if (!locked) return none('unknown session');
  let session = locked;
  // The attempt fences off a stale duplicate (a node presumed dead that still runs), and seq
  // drops replays after a Redis restart or a redelivery.
  if (env.attempt !== session.attempt) return none(`stale attempt ${env.attempt} (current ${session.attempt})`);
  if (env.seq <= session.lastEventSeq) return none(`replayed seq ${env.seq}`);
  await setLastEventSeq(tx, session.id, env.seq);
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
        effects.session = await setProgress(tx, session.id, Number(e.fraction ?? 0));
        break;
      }
      case 'epoch': {
        const epoch = Number(e.epoch);
        const metrics = epochMetrics(e);
        // An epoch re-run after a resume is stored once, and subscribers were sent it once.
        effects.epoch = await insertEpoch(tx, session, epoch, metrics);
        effects.session = await advanceEpoch(tx, session.id, epoch);
        break;
      }
      case 'checkpoint': {
        if (!env.upload) break;
        const replaced = await replaceOlderCheckpoints(tx, session, env.upload.key);
        if (replaced.length) {
          effects.obsolete = { organizationId: session.organizationId, storageProfileId: session.storageProfileId, keys: replaced };
        }
        await upsertArtifact(tx, session, 'CHECKPOINT', env.upload);
        session = await setLastCheckpoint(tx, session.id, env.upload.key);
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
        effects.session = await failOrRetry(tx, session, effects, {
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
          await addCrashDetails(tx, session.id, e.exitCode ?? null, String(e.stderrTail ?? ''));
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
      effects.session = await failOrRetry(tx, session, effects, {
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
      const requeued = await requeue(tx, session, `node ${env.nodeId} gave the job back: ${e.reason}`, {
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
    const requeued = await requeue(
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
  const rows = await otherCheckpoints(tx, session.id, key);
  const older = rows.filter((r) => checkpointSlot(r.storage_key) === slot);
  if (!older.length) return [];
  await deleteArtifacts(tx, older.map((r) => r.id));
  return older.map((r) => r.storage_key);
}
