// Decides where a session runs and hands it to a provider: profile (given, the organization's
// default, or the implicit platform one) -> candidates by strategy -> checks -> submit, recording
// every attempt on the session. Also hands requeued sessions (resume after a lost node, a give-back
// or a retry; training/lifecycle.ts requeue) to their provider again, and cancels them. What it
// reads and writes of sessions goes through the training module (repository.ts, lifecycle.ts).
import type { Sql, SqlQuery } from '../db/sql.js';
import { NotFoundError, type ConflictError, type LimitExceededError } from '../lib/errors.js';
import { createLogger, errorFields } from '../lib/log.js';
import type { SessionAttempt } from '../modules/training/entity.js';
import { insertSession, transition, type NewSession } from '../modules/training/lifecycle.js';
import type { TrainingSessionRecord } from '../modules/training/records.js';
import { countActiveOnProfile, moveQueuedToCandidate, setExternalJobId, setFirstExternalJobId } from '../modules/training/repository.js';
import type { ProviderRegistry } from '../providers/registry.js';
import { planCandidates, refusalFor, type Candidate } from './candidates.js';
import { datasetFor, jobPayload } from './payload.js';
import { findProfile, IMPLICIT_PLATFORM } from './profiles.js';

const log = createLogger('orchestrator');

export interface SessionPublisher {
  sessionChanged(session: TrainingSessionRecord): void;
}

/** A new session to place, and the compute profile its caller asked for (null: the default). */
export interface PlacementRequest {
  session: NewSession;
  computeProfileId: string | null;
}

/** Why nothing was stored: an unknown profile, or no candidate can take the session (limits, capacity, availability). */
export type PlacementRefusal = NotFoundError | ConflictError | LimitExceededError;

/**
 * The placed session (QUEUED, or FAILED with every attempt when each viable candidate's submission
 * failed), or a refusal decided before anything was stored.
 */
export type Placement = { ok: true; session: TrainingSessionRecord } | { ok: false; refusal: PlacementRefusal };

export class Orchestrator {
  constructor(
    private readonly sql: Sql,
    private readonly providers: ProviderRegistry,
    private readonly publisher: SessionPublisher,
  ) {}

  /**
   * trainModel's one question: where does this session run? Where it would run is decided before
   * anything is stored, so a refusal leaves no row.
   */
  async place(request: PlacementRequest): Promise<Placement> {
    const { session, computeProfileId } = request;
    const profile = await findProfile(this.sql, session.organizationId, computeProfileId);
    if (!profile) return { ok: false, refusal: new NotFoundError('ComputeProfile', computeProfileId!) };
    const candidates = await planCandidates(this.sql, this.providers, session.organizationId, profile);
    const refusal = refusalFor(candidates);
    if (refusal) return { ok: false, refusal };
    return { ok: true, session: await this.submitToCandidates(session, candidates) };
  }

  /**
   * Records a new session and places it on the first candidate that accepts the job. The row is
   * written already QUEUED (PENDING -> QUEUED in one statement, see lifecycle.insertSession) before
   * the job is submitted, so a node that picks the job up at once can claim it; when no candidate
   * takes it, the session is recorded FAILED with every attempt. This is trainModel's hot path.
   */
  private async submitToCandidates(session: NewSession, candidates: Candidate[]): Promise<TrainingSessionRecord> {
    const attempts: SessionAttempt[] = [];
    const entry = (c: Candidate, reason: string, ok: boolean): SessionAttempt => ({
      provider: c.profile.provider,
      profileId: c.profile.id,
      reason,
      at: new Date().toISOString(),
      ok,
    });
    let placed: TrainingSessionRecord | null = null;
    for (const c of candidates) {
      if (!c.viable) {
        attempts.push(entry(c, c.reason, false));
        continue;
      }
      const adapter = this.providers.get(c.profile.provider);
      const payload = jobPayload({ ...session, attempt: 1, config: session.config }, session.dataset, c.profile, null);
      const predictedJobId = adapter.externalJobIdFor?.(payload) ?? null;
      const queuedAttempts = [...attempts, entry(c, predictedJobId ? `queued as ${predictedJobId}` : 'queued', true)];
      const fields = {
        attempt: 1,
        provider: c.profile.provider,
        computeProfileId: c.profile.id,
        externalJobId: predictedJobId,
        attempts: queuedAttempts,
      };
      const write = async (tx: SqlQuery) => {
        if (placed) {
          // Already QUEUED for an earlier candidate whose submission failed: move it to this one.
          return moveQueuedToCandidate(tx, session.id, fields);
        }
        return insertSession(tx, session, 'QUEUED', fields);
      };
      const limited = c.profile.id !== null && c.profile.maxConcurrentJobs != null;
      const row: TrainingSessionRecord | null = limited
        ? await this.sql.transaction(async (tx) => {
            // Re-check the concurrency limit under a per-profile lock: two requests must not both take the last slot.
            await tx.query('select pg_advisory_xact_lock(hashtext(?))', [`profile:${c.profile.id}`]);
            return (await countActiveOnProfile(tx, c.profile.id!)) >= c.profile.maxConcurrentJobs! ? null : write(tx);
          })
        : await write(this.sql);
      if (!row) {
        attempts.push(entry(c, 'concurrency limit reached', false));
        continue;
      }
      placed = row;
      try {
        const { externalJobId } = await adapter.submit(c.profile, payload);
        if (externalJobId !== predictedJobId) {
          const updated = await setFirstExternalJobId(this.sql, session.id, externalJobId);
          if (updated) placed = updated;
        }
        this.publisher.sessionChanged(placed);
        return placed;
      } catch (err) {
        log.warn('submission failed; trying the next candidate', { sessionId: session.id, provider: c.profile.provider, ...errorFields(err) });
        attempts.push(entry(c, `submission failed: ${(err as Error).message}`, false));
      }
    }
    const errorMessage = `No compute could take the session: ${attempts.map((a) => a.reason).join('; ')}`;
    const failed = placed
      ? await this.sql.transaction((tx) =>
          transition(tx, session.id, 'FAILED', { from: ['QUEUED'], set: { attempts, errorMessage } }),
        )
      : await insertSession(this.sql, session, 'FAILED', { attempts, errorMessage });
    if (!failed) throw new Error(`session ${session.id} changed while it was being placed`);
    this.publisher.sessionChanged(failed);
    return failed;
  }

  /** Hands a QUEUED session's current attempt to its provider (after the transaction committed). */
  async submitQueued(session: TrainingSessionRecord): Promise<void> {
    const profile =
      (await findProfile(this.sql, session.organizationId, session.computeProfileId).catch(() => IMPLICIT_PLATFORM)) ??
      IMPLICIT_PLATFORM;
    const adapterProfile = session.computeProfileId ? profile : IMPLICIT_PLATFORM;
    try {
      const payload = jobPayload(session, await datasetFor(this.sql, session.datasetVersionId), adapterProfile, session.lastCheckpointKey);
      const { externalJobId } = await this.providers.get(session.provider ?? 'PLATFORM').submit(adapterProfile, payload);
      await setExternalJobId(this.sql, session.id, session.attempt, externalJobId);
      this.publisher.sessionChanged({ ...session, externalJobId });
    } catch (err) {
      log.error('could not queue the session again', { sessionId: session.id, ...errorFields(err) });
      const failed = await this.sql.transaction((tx) =>
        transition(tx, session.id, 'FAILED', {
          attempt: session.attempt,
          set: { errorMessage: `Could not queue the session again: ${(err as Error).message}` },
        }),
      );
      if (failed) this.publisher.sessionChanged(failed);
    }
  }

  async cancelAtProvider(session: TrainingSessionRecord): Promise<void> {
    if (!session.provider || !this.providers.has(session.provider)) return;
    await this.providers.get(session.provider).cancel({
      id: session.id,
      attempt: session.attempt,
      externalJobId: session.externalJobId,
    });
  }
}
