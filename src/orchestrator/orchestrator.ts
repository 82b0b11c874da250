// Decides where a session runs and hands it to a provider: profile (given, the organization's
// default, or the implicit platform one) -> candidates by strategy -> checks -> submit, recording
// every attempt on the session. Also hands requeued sessions (resume after a lost node, a give-back
// or a retry; training/lifecycle.ts requeue) to their provider again, and cancels them.
import type { Sql, SqlQuery } from '../db/sql.js';
import { ConflictError, LimitExceededError, NotFoundError } from '../lib/errors.js';
import { createLogger, errorFields } from '../lib/log.js';
import type { Provider } from '../modules/compute/entity.js';
import type { SessionAttempt } from '../modules/training/entity.js';
import { insertSession, transition, type NewSession } from '../modules/training/lifecycle.js';
import type { StoredTrainingConfig } from '../modules/training/config.js';
import type { TrainingSessionRecord } from '../modules/training/records.js';
import {
  countActiveOnProfile,
  moveQueuedToCandidate,
  setExternalJobId,
  setFirstExternalJobId,
} from '../modules/training/repository.js';
import type { ProviderRegistry } from '../providers/registry.js';
import type { ProfileForAdapter } from '../providers/types.js';
import type { DatasetRef, JobPayload } from '../../protocol/index.js';

const log = createLogger('orchestrator');

export interface Candidate {
  profile: ProfileForAdapter;
  viable: boolean;
  reason: string;
  /** True when the only problem is a limit (concurrency, cost), for the error type. */
  limited: boolean;
}

export interface SessionPublisher {
  sessionChanged(session: TrainingSessionRecord): void;
}

// The implicit profile used when an organization has none: platform GPUs, wait when busy.
const IMPLICIT_PLATFORM: ProfileForAdapter = {
  id: null,
  name: 'platform (default)',
  provider: 'PLATFORM',
  config: { gpus: 1, allowWaiting: true, maxRetries: 0 },
  maxConcurrentJobs: null,
  maxCostPerSessionUsd: null,
  fallbackProfileIds: [],
  strategy: 'QUEUE',
};

interface ProfileRow {
  id: string;
  name: string;
  provider: Provider;
  config: Record<string, unknown>;
  max_concurrent_jobs: number | null;
  max_cost_per_session_usd: number | null;
  fallback_profile_ids: string[];
  strategy: ProfileForAdapter['strategy'];
  is_default: boolean;
}

const toProfile = (r: ProfileRow): ProfileForAdapter => ({
  id: r.id,
  name: r.name,
  provider: r.provider,
  config: r.config,
  maxConcurrentJobs: r.max_concurrent_jobs,
  maxCostPerSessionUsd: r.max_cost_per_session_usd,
  fallbackProfileIds: r.fallback_profile_ids,
  strategy: r.strategy,
});

const PROFILE_COLUMNS =
  'id, name, provider, config, max_concurrent_jobs, max_cost_per_session_usd, fallback_profile_ids, strategy, is_default';

export class Orchestrator {
  constructor(
    private readonly sql: Sql,
    private readonly providers: ProviderRegistry,
    private readonly publisher: SessionPublisher,
  ) {}

  /** The profile a session would use: the given one, the default, or the implicit platform profile. */
  async resolveProfile(orgId: string, profileId: string | null): Promise<ProfileForAdapter> {
    const rows = profileId
      ? await this.sql.query<ProfileRow>(
          `select ${PROFILE_COLUMNS} from compute_profiles where organization_id = ? and id = ?`,
          [orgId, profileId],
        )
      : await this.sql.query<ProfileRow>(
          `select ${PROFILE_COLUMNS} from compute_profiles where organization_id = ? and is_default`,
          [orgId],
        );
    if (profileId && !rows[0]) throw new NotFoundError('ComputeProfile', profileId);
    return rows[0] ? toProfile(rows[0]) : IMPLICIT_PLATFORM;
  }

  /** Candidates in the order the strategy tries them, each checked. */
  async plan(orgId: string, profile: ProfileForAdapter): Promise<Candidate[]> {
    const chain: ProfileForAdapter[] = [profile];
    if (profile.strategy !== 'QUEUE' && profile.fallbackProfileIds.length) {
      const rows = await this.sql.query<ProfileRow>(
        `select ${PROFILE_COLUMNS} from compute_profiles where organization_id = ? and id = any(?::uuid[])`,
        [orgId, profile.fallbackProfileIds],
      );
      const byId = new Map(rows.map((r) => [r.id, toProfile(r)]));
      for (const id of profile.fallbackProfileIds) if (byId.has(id)) chain.push(byId.get(id)!);
    }
    // CHEAPEST and FASTEST rank by estimates; until cost and speed estimates exist for the cloud
    // providers the chain keeps the profile's own order (PREFERRED), which is stated in attempts.
    const out: Candidate[] = [];
    for (const p of chain) out.push(await this.check(p));
    return out;
  }

  private async check(profile: ProfileForAdapter): Promise<Candidate> {
    if (!this.providers.has(profile.provider)) {
      return { profile, viable: false, limited: false, reason: `${profile.provider} is not available in this deployment yet` };
    }
    const adapter = this.providers.get(profile.provider);
    const creds = await adapter.checkCredentials(profile);
    if (!creds.ok) return { profile, viable: false, limited: false, reason: creds.reason };
    if (profile.id && profile.maxConcurrentJobs != null) {
      const active = await countActiveOnProfile(this.sql, profile.id);
      if (active >= profile.maxConcurrentJobs) {
        return {
          profile,
          viable: false,
          limited: true,
          reason: `${profile.name}: ${active} of ${profile.maxConcurrentJobs} concurrent jobs already running or queued`,
        };
      }
    }
    const capacity = await adapter.checkCapacity(profile);
    return { profile, viable: capacity.ok, limited: false, reason: capacity.reason };
  }

  /** Throws the typed error a caller should see when no candidate can take the session. */
  static assertSomeViable(candidates: Candidate[]): void {
    if (candidates.some((c) => c.viable)) return;
    const reasons = candidates.map((c) => c.reason).join('; ');
    if (candidates.every((c) => c.limited)) {
      const max = candidates[0]?.profile.maxConcurrentJobs ?? null;
      throw new LimitExceededError('maxConcurrentJobs', max, `No compute can take this session now: ${reasons}`);
    }
    throw new ConflictError(`No compute can take this session: ${reasons}`);
  }

  /**
   * Records a new session and places it on the first candidate that accepts the job. The row is
   * written already QUEUED (PENDING -> QUEUED in one statement, see lifecycle.insertSession) before
   * the job is submitted, so a node that picks the job up at once can claim it; when no candidate
   * takes it, the session is recorded FAILED with every attempt. This is trainModel's hot path.
   */
  async place(session: NewSession, candidates: Candidate[]): Promise<TrainingSessionRecord> {
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
      const payload = this.payload({ ...session, attempt: 1, config: session.config }, session.dataset, c.profile, null);
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
          return moveQueuedToCandidate(tx, session.id, {
            provider: c.profile.provider,
            computeProfileId: c.profile.id,
            externalJobId: predictedJobId,
            attempts: queuedAttempts,
          });
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
    const profile = await this.resolveProfile(session.organizationId, session.computeProfileId).catch(() => IMPLICIT_PLATFORM);
    const adapterProfile = session.computeProfileId ? profile : IMPLICIT_PLATFORM;
    try {
      const payload = this.payload(session, await this.datasetFor(session.datasetVersionId), adapterProfile, session.lastCheckpointKey);
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

  private payload(
    session: { id: string; organizationId: string; attempt: number; config: StoredTrainingConfig },
    dataset: DatasetRef,
    profile: ProfileForAdapter,
    checkpointKey: string | null,
  ): JobPayload {
    const { task, framework, architecture, epochs, ...rest } = session.config;
    const config: JobPayload['config'] = { task, framework, architecture, epochs };
    for (const [k, v] of Object.entries(rest)) if (v !== null && v !== undefined) config[k] = v;
    const timeoutMinutes = profile.config.timeoutMinutes as number | undefined;
    return {
      v: 1,
      sessionId: session.id,
      organizationId: session.organizationId,
      attempt: session.attempt,
      config,
      dataset,
      resume: checkpointKey ? { checkpointKey } : null,
      requirements: {
        gpus: Number(profile.config.gpus ?? 1),
        gpuType: (profile.config.gpuType as string | undefined) ?? null,
        timeoutSeconds: timeoutMinutes ? timeoutMinutes * 60 : null,
      },
      enqueuedAt: new Date().toISOString(),
    };
  }

  private async datasetFor(datasetVersionId: string): Promise<DatasetRef> {
    const [dv] = await this.sql.query<{ id: string; sha256: string | null; format: string; size_bytes: string | null }>(
      'select id, sha256, format, size_bytes from dataset_versions where id = ?',
      [datasetVersionId],
    );
    if (!dv?.sha256) throw new Error('the dataset version has no archive checksum (not finalized)');
    return datasetForJob(dv);
  }
}

export function datasetForJob(dv: { id: string; sha256: string | null; format: string; size_bytes: string | number | null }): DatasetRef {
  return {
    versionId: dv.id,
    sha256: dv.sha256 ?? '',
    format: dv.format.toLowerCase() as DatasetRef['format'],
    sizeBytes: Number(dv.size_bytes ?? 0),
  };
}
