// One bee-queue job, start to end (PROTOCOL.md §1, §3, §5): validate the payload, claim the
// attempt, fetch the dataset (and the checkpoint to resume from), write run.json, run a fresh
// trainer process, upload checkpoints and artifacts as they appear, append every event to the
// outbox in the trainer's order, and tell the API how the run ended when the trainer could not.
import { randomBytes } from 'node:crypto';
import { copyFileSync, linkSync, mkdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from '../src/lib/log.js';
import { NodeApiUnavailableError, type ClaimGrant, type NodeApiClient } from './api-client.js';
import { UPLOAD_ATTEMPTS, type NodeConfig } from './config.js';
import { DatasetCache, type DatasetLease } from './dataset-cache.js';
import type { Gpu } from './gpus.js';
import type { LiveLogs } from './live-logs.js';
import type { Outbox, OutboxJob } from './outbox.js';
import {
  validateJobPayload,
  type ArtifactEvent,
  type CheckpointEvent,
  type JobPayload,
  type NodeEvent,
  type TrainerEvent,
  type UploadRef,
} from '../protocol/index.js';
import { describeExit, TrainerProcess, type TrainerOutcome } from './trainer-process.js';
import { DownloadError, downloadVerified, hashFile, putFile } from './transfers.js';

/** A job whose data is not a valid job payload; bee-queue records it as failed. */
export class InvalidJobPayloadError extends Error {
  constructor(
    public readonly jobId: string,
    problem: string,
  ) {
    super(`job ${jobId}: payload does not match schema/job-payload.schema.json: ${problem}`);
    this.name = 'InvalidJobPayloadError';
  }
}

/** Where a job runs: one GPU, or the CPU. */
export interface Slot {
  index: number;
  gpu: Gpu | null;
}

export interface JobRunnerDeps {
  config: NodeConfig;
  python: string;
  api: NodeApiClient;
  outbox: Outbox;
  datasets: DatasetCache;
  liveLogs: LiveLogs;
  logger: Logger;
}

/** How a job ended, from the node's point of view (the worker logs it; bee-queue stores it). */
export type JobEnd =
  | { kind: 'refused'; conflict: string; message: string }
  | { kind: 'cancelled_before_start' }
  | { kind: 'given_back'; checkpointKey: string | null; trainer: TrainerOutcome | null }
  | { kind: 'setup_failed'; error: string }
  | { kind: 'stale'; trainer: TrainerOutcome | null }
  | { kind: 'trainer'; outcome: TrainerOutcome };

/** Resumable position of an uploaded checkpoint; the latest one is handed back on shutdown. */
interface CheckpointRef {
  key: string;
  epoch: number;
  step: number;
}

export class JobRunner {
  readonly sessionId: string;
  readonly attempt: number;
  private readonly payload: JobPayload;
  private readonly log: Logger;
  private readonly prepare = new AbortController();
  private trainer: TrainerProcess | null = null;
  private stopReason: 'cancel' | 'shutdown' | 'stale' | null = null;
  private claimGranted = false;
  private latestCheckpoint: CheckpointRef | null = null;
  private outboxJob: OutboxJob | null = null;
  private workDir: string | null = null;
  private outputDir = '';
  private chain: Promise<void> = Promise.resolve();
  private staged = 0;

  constructor(
    private readonly deps: JobRunnerDeps,
    readonly jobId: string,
    data: unknown,
    readonly slot: Slot,
  ) {
    const checked = validateJobPayload(data);
    if (!checked.ok) throw new InvalidJobPayloadError(jobId, checked.error);
    this.payload = checked.value;
    this.sessionId = this.payload.sessionId;
    this.attempt = this.payload.attempt;
    this.log = deps.logger.child(`slot${slot.index}`);
    if (this.payload.resume) this.latestCheckpoint = { key: this.payload.resume.checkpointKey, epoch: -1, step: -1 };
  }

  /**
   * The API granted this node the attempt. Until then the job is not reported as running: a
   * heartbeat naming a session the API still has QUEUED is answered "stop" (it reads as a
   * session queued elsewhere), and stopping it mid-claim left it RUNNING here with no trainer.
   */
  get claimed(): boolean {
    return this.claimGranted;
  }

  /** Why the runner was asked to stop, if it was. */
  get stopping(): 'cancel' | 'shutdown' | 'stale' | null {
    return this.stopReason;
  }

  /** A `cancel` for this session and attempt: stop the trainer (or do not start it). */
  cancel(): void {
    this.requestStop('cancel');
  }

  /**
   * The API queued this session again elsewhere (this node was presumed lost): stop the trainer
   * and send nothing more; the attempt is no longer ours to give back.
   */
  stopStale(): void {
    this.requestStop('stale');
  }

  /** The node is shutting down: stop the trainer at a checkpoint and hand the session back. */
  shutdown(): void {
    this.requestStop('shutdown');
  }

  private requestStop(reason: 'cancel' | 'shutdown' | 'stale'): void {
    if (this.stopReason !== null) return;
    this.stopReason = reason;
    if (this.trainer) void this.trainer.stop(reason === 'shutdown' ? 'shutdown' : 'cancel');
    else this.prepare.abort(new Error(`job stopped before the trainer started (${reason})`));
  }

  async run(): Promise<JobEnd> {
    const { payload } = this;
    this.log.info('job received', { session: this.sessionId, attempt: this.attempt, job: this.jobId });
    const claim = await this.claim();
    if (!claim.ok) {
      if (claim.conflict === 'aborted') return this.endBeforeClaim();
      this.log.info('claim refused: job ends without running', { session: this.sessionId, attempt: this.attempt, conflict: claim.conflict });
      return { kind: 'refused', conflict: claim.conflict, message: claim.message };
    }
    this.claimGranted = true;
    this.outboxJob = this.deps.outbox.job(this.sessionId, this.attempt);
    let lease: DatasetLease | null = null;
    try {
      this.workDir = path.join(this.deps.config.dataDir, 'work', `${this.sessionId}.${this.attempt}.${randomBytes(3).toString('hex')}`);
      this.outputDir = path.join(this.workDir, 'output');
      mkdirSync(path.join(this.workDir, 'staging'), { recursive: true });

      let resumeFrom: string | null = null;
      try {
        if (this.stopReason) throw this.prepare.signal.reason;
        lease = await this.withDownloadRetries(() =>
          this.deps.datasets.acquire(
            {
              versionId: payload.dataset.versionId,
              sha256: claim.grant.dataset.sha256,
              url: this.deps.api.resolve(claim.grant.dataset.url),
              headers: claim.grant.dataset.headers,
              format: claim.grant.dataset.format,
              filename: claim.grant.dataset.filename,
            },
            this.prepare.signal,
          ),
        );
        if (claim.grant.resume) resumeFrom = await this.fetchResume(claim.grant.resume);
      } catch (err) {
        if (this.stopReason) return await this.endBeforeStart();
        const message = err instanceof Error ? err.message : String(err);
        this.log.error('job setup failed', { session: this.sessionId, attempt: this.attempt, error: message });
        this.appendNode({ type: 'crashed', ts: now(), exitCode: null, signal: null, stderrTail: `gpu-node: ${message}`, lastEventType: null });
        return { kind: 'setup_failed', error: message };
      }
      if (this.stopReason) return await this.endBeforeStart();

      const configPath = path.join(this.workDir, 'run.json');
      const runJson = {
        ...payload.config,
        dataset: { path: lease.root, format: payload.dataset.format },
        output_dir: this.outputDir,
        session_id: this.sessionId,
        resume_from: resumeFrom,
        device: this.slot.gpu ? 'cuda:0' : 'cpu',
      };
      writeFileSync(configPath, JSON.stringify(runJson, null, 2));
      if (payload.requirements.gpus > 0 && !this.slot.gpu) {
        this.log.warn('job asks for a GPU but this node has none; it runs on the CPU', { session: this.sessionId });
      }

      const outcome = await this.runTrainer(configPath);
      return await this.finish(outcome);
    } finally {
      this.outboxJob?.end();
      lease?.release();
      if (this.workDir) await rm(this.workDir, { recursive: true, force: true }).catch(() => {});
    }
  }

  // ------------------------------------------------------------------ claim and setup

  /** Claims until an answer: an unreachable API only delays the job (a stop request ends the wait). */
  private async claim(): Promise<{ ok: true; grant: ClaimGrant } | { ok: false; conflict: string; message: string }> {
    for (let wait = 1000; ; wait = Math.min(wait * 2, 30_000)) {
      try {
        return await this.deps.api.claim(
          this.sessionId,
          { nodeId: this.deps.config.nodeId, attempt: this.attempt, jobId: this.jobId },
          { signal: this.prepare.signal },
        );
      } catch (err) {
        if (this.prepare.signal.aborted) return { ok: false, conflict: 'aborted', message: 'stopped before the claim' };
        if (!(err instanceof NodeApiUnavailableError)) throw err;
        this.log.warn('claim failed; retrying', { session: this.sessionId, error: err.message });
        await delay(wait, undefined, { signal: this.prepare.signal }).catch(() => {});
      }
    }
  }

  /** Shutdown before the claim answered: claim now and hand the session straight back. */
  private async endBeforeClaim(): Promise<JobEnd> {
    if (this.stopReason !== 'shutdown') return { kind: 'cancelled_before_start' };
    const claim = await this.deps.api
      .claim(this.sessionId, { nodeId: this.deps.config.nodeId, attempt: this.attempt, jobId: this.jobId })
      .catch(() => null);
    if (!claim?.ok) return { kind: 'refused', conflict: claim?.conflict ?? 'unreachable', message: claim?.message ?? 'API unreachable during shutdown' };
    this.outboxJob = this.deps.outbox.job(this.sessionId, this.attempt);
    try {
      return await this.giveBack(null);
    } finally {
      this.outboxJob.end();
    }
  }

  private async endBeforeStart(): Promise<JobEnd> {
    if (this.stopReason === 'shutdown') return this.giveBack(null);
    if (this.stopReason === 'stale') return { kind: 'stale', trainer: null };
    this.log.info('job cancelled before the trainer started', { session: this.sessionId, attempt: this.attempt });
    return { kind: 'cancelled_before_start' };
  }

  /** Network trouble and expired URLs are retried; integrity and archive problems are final. */
  private async withDownloadRetries<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof DownloadError) || attempt >= 3 || this.prepare.signal.aborted) throw err;
        this.log.warn('download failed; retrying', { session: this.sessionId, error: err.message });
        await delay(1000 * attempt, undefined, { signal: this.prepare.signal });
      }
    }
  }

  private async fetchResume(resume: { url: string; headers: Record<string, string>; sha256: string }): Promise<string> {
    const dir = path.join(this.workDir!, 'resume');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'checkpoint.pt');
    await this.withDownloadRetries(() =>
      downloadVerified(this.deps.api.resolve(resume.url), file, resume.sha256, {
        signal: this.prepare.signal,
        headers: resume.headers,
        what: 'resume checkpoint',
      }),
    );
    return file;
  }

  // ------------------------------------------------------------------ the trainer

  private async runTrainer(configPath: string): Promise<TrainerOutcome> {
    const { config } = this.deps;
    const timeoutSeconds = this.payload.requirements.timeoutSeconds;
    const trainer = new TrainerProcess({
      python: this.deps.python,
      trainersDir: config.trainersDir,
      configPath,
      cwd: this.workDir!,
      gpu: this.slot.gpu ? this.slot.gpu.uuid : null,
      timeoutMs: timeoutSeconds ? timeoutSeconds * 1000 : config.jobTimeoutMs,
      graceMs: config.cancelGraceMs,
    });
    this.trainer = trainer;
    trainer.on('event', (event) => this.onTrainerEvent(event));
    trainer.on('log', (line) => {
      this.deps.liveLogs.publish(this.sessionId, this.attempt, line);
      this.log.debug(`trainer ${line.stream}: ${line.line}`, { session: this.sessionId });
    });
    trainer.on('invalid', (bad) =>
      this.log.warn('trainer wrote an invalid event line (skipped)', { session: this.sessionId, error: bad.error, line: bad.line.slice(0, 300) }),
    );
    trainer.start();
    // A stop that arrived between setup and spawn.
    if (this.stopReason) void trainer.stop(this.stopReason === 'shutdown' ? 'shutdown' : 'cancel');
    const outcome = await trainer.result;
    // Every event's upload and append happen before the node says how the run ended.
    await this.chain;
    return outcome;
  }

  private onTrainerEvent(event: TrainerEvent): void {
    // The trainer rewrites checkpoints/last.pt every epoch (atomic rename): a hard link taken
    // now keeps this event's bytes even if the next checkpoint lands before the upload runs.
    const staged = event.type === 'checkpoint' || event.type === 'artifact' ? this.stage(event) : null;
    this.chain = this.chain.then(() => this.handleEvent(event, staged)).catch((err) => {
      this.log.error('handling a trainer event failed', { session: this.sessionId, type: event.type, error: (err as Error).message });
    });
    this.logProgress(event);
  }

  private stage(event: CheckpointEvent | ArtifactEvent): string | null {
    const target = path.join(this.workDir!, 'staging', `${++this.staged}-${path.basename(event.path)}`);
    try {
      linkSync(event.path, target);
      return target;
    } catch {
      try {
        copyFileSync(event.path, target);
        return target;
      } catch (err) {
        this.log.warn('cannot read a file the trainer reported; its event goes without an upload', { path: event.path, error: (err as Error).message });
        return null;
      }
    }
  }

  private async handleEvent(event: TrainerEvent, staged: string | null): Promise<void> {
    let upload: UploadRef | undefined;
    if ((event.type === 'checkpoint' || event.type === 'artifact') && staged) {
      upload = (await this.upload(event, staged)) ?? undefined;
      await rm(staged, { force: true });
      if (upload && event.type === 'checkpoint' && event.kind !== 'best') {
        const prev = this.latestCheckpoint;
        if (!prev || event.epoch > prev.epoch || (event.epoch === prev.epoch && event.step >= prev.step)) {
          this.latestCheckpoint = { key: upload.key, epoch: event.epoch, step: event.step };
        }
      }
    }
    this.outboxJob!.append('trainer', event, upload);
  }

  private async upload(event: CheckpointEvent | ArtifactEvent, file: string): Promise<UploadRef | null> {
    const actual = await hashFile(file);
    if (actual.sha256 !== event.sha256) {
      this.log.warn('file changed before it could be uploaded; event sent without upload', { path: event.path });
      return null;
    }
    const rel = path.relative(this.outputDir, event.path);
    const name = rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel.split(path.sep).join('/') : path.basename(event.path);
    let lastError = '';
    for (let attempt = 1; attempt <= UPLOAD_ATTEMPTS; attempt++) {
      try {
        const grant = await this.deps.api.requestUpload(this.sessionId, {
          nodeId: this.deps.config.nodeId,
          attempt: this.attempt,
          kind: event.type,
          name,
          sizeBytes: actual.sizeBytes,
          sha256: actual.sha256,
        });
        if (!grant.ok) {
          // This attempt is no longer the session's (cancelled, or handed to another node).
          this.log.warn('upload refused: this attempt is stale; stopping the trainer', { session: this.sessionId, conflict: grant.conflict });
          this.requestStop('stale');
          return null;
        }
        await putFile(this.deps.api.resolve(grant.grant.url), file, { headers: grant.grant.headers });
        return { key: grant.grant.key, sha256: actual.sha256, sizeBytes: actual.sizeBytes };
      } catch (err) {
        lastError = (err as Error).message;
        if (attempt < UPLOAD_ATTEMPTS) await delay(500 * 2 ** attempt);
      }
    }
    this.log.error('upload failed; the event goes without it', { session: this.sessionId, name, error: lastError });
    return null;
  }

  private logProgress(event: TrainerEvent): void {
    const base = { session: this.sessionId, attempt: this.attempt };
    if (event.type === 'started') {
      this.log.info(`training started: ${event.architecture} on ${event.device}, epochs ${event.start_epoch + 1}..${event.total_epochs}`, base);
    } else if (event.type === 'epoch') {
      const metrics = Object.entries(event.metrics)
        .slice(0, 3)
        .map(([k, v]) => `${k} ${Number(v).toFixed(4)}`)
        .join(', ');
      this.log.info(`epoch ${event.epoch}/${event.total_epochs}: loss ${event.train_loss.toFixed(4)}${metrics ? ', ' + metrics : ''} (${event.seconds.toFixed(1)} s)`, base);
    }
  }

  // ------------------------------------------------------------------ the end

  private async finish(outcome: TrainerOutcome): Promise<JobEnd> {
    const base = { session: this.sessionId, attempt: this.attempt, seconds: Math.round(outcome.durationMs / 100) / 10 };
    if (this.stopReason === 'stale' && outcome.kind !== 'completed') {
      this.log.info('job ended: attempt went stale, trainer stopped', base);
      return { kind: 'stale', trainer: outcome };
    }
    switch (outcome.kind) {
      case 'completed':
        this.log.info(`job ended: completed (${outcome.completed.epochs} epochs, best ${outcome.completed.best_metric_name} ${outcome.completed.best_metric ?? 'n/a'})`, base);
        break;
      case 'stopped':
        this.log.info(`job ended: stopped at epoch ${outcome.stopped.epoch} step ${outcome.stopped.step} (${outcome.stopped.reason})`, base);
        break;
      case 'failed':
        this.log.warn(`job ended: failed, exit ${outcome.exitCode}: ${outcome.failed.error_type}: ${outcome.failed.message}`, base);
        this.appendNode({ type: 'crashed', ts: now(), exitCode: outcome.exitCode, signal: outcome.signal, stderrTail: outcome.stderrTail, lastEventType: 'failed' });
        break;
      case 'crashed':
        this.log.warn(`job ended: crashed (${describeExit(outcome)}), last event ${outcome.lastEvent?.type ?? 'none'}`, base);
        this.appendNode({
          type: 'crashed',
          ts: now(),
          exitCode: outcome.exitCode,
          signal: outcome.signal,
          stderrTail: outcome.stderrTail,
          lastEventType: outcome.lastEvent?.type ?? null,
        });
        break;
      case 'timed_out':
        this.log.warn(`job ended: timed out after ${outcome.afterSeconds} s${outcome.stopped ? ' (checkpointed)' : ''}`, base);
        this.appendNode({ type: 'timed_out', ts: now(), afterSeconds: outcome.afterSeconds, stderrTail: outcome.stderrTail });
        break;
      case 'lost':
        return this.giveBack(outcome);
    }
    return { kind: 'trainer', outcome };
  }

  /** PROTOCOL.md §5, node SIGTERM: `given_back` with the latest uploaded checkpoint, then `released`. */
  private async giveBack(outcome: TrainerOutcome | null): Promise<JobEnd> {
    const checkpointKey = this.latestCheckpoint?.key ?? null;
    this.appendNode({ type: 'given_back', ts: now(), reason: 'node_shutdown', checkpointKey });
    // The API re-queues on `released`; let the stream have `given_back` (and the uploads before it) first.
    await this.deps.outbox.flushed(10_000);
    try {
      const r = await this.deps.api.released(this.sessionId, { nodeId: this.deps.config.nodeId, attempt: this.attempt });
      if (!r.ok) this.log.warn('released refused', { session: this.sessionId, conflict: r.conflict });
    } catch (err) {
      this.log.error('could not tell the API the session is released; its reaper will', { session: this.sessionId, error: (err as Error).message });
    }
    this.log.info(`job ended: given back (checkpoint ${checkpointKey ?? 'none'})`, { session: this.sessionId, attempt: this.attempt });
    return { kind: 'given_back', checkpointKey, trainer: outcome };
  }

  private appendNode(event: NodeEvent): void {
    this.outboxJob!.append('node', event);
  }
}

function now(): string {
  return new Date().toISOString();
}
