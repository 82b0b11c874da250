// One trainer run as one object: spawns `python -m cvtrain train --config run.json --events fd:3`,
// turns fd 3 into validated events and stdout/stderr into log lines, and ends with exactly one
// TrainerOutcome saying how the run ended. Everything that decides what to tell the API about a
// dead trainer (exit code, signal, stderr tail, last event) is collected here, in one place.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { MAX_LINE_BYTES, TAIL_MAX_BYTES, TAIL_MAX_LINES } from './config.js';
import { LineSplitter, TailBuffer } from './lines.js';
import {
  validateTrainerEvent,
  type CompletedEvent,
  type FailedEvent,
  type FinalEvent,
  type StoppedEvent,
  type TrainerEvent,
} from '../protocol/index.js';

/** Why the node asked the trainer to stop. */
export type StopReason = 'cancel' | 'timeout' | 'shutdown';

export interface TrainerLogLine {
  stream: 'stdout' | 'stderr';
  line: string;
  ts: string;
  truncated: boolean;
}

export interface InvalidEventLine {
  line: string;
  error: string;
}

interface OutcomeBase {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stderrTail: string;
  stdoutTail: string;
  /** The last valid event, whatever its type. */
  lastEvent: TrainerEvent | null;
  /** Set when the node asked for the stop (cancel, time limit, node shutdown). */
  stopRequested: StopReason | null;
  /** The trainer ignored SIGTERM for the grace period and was killed. */
  killed: boolean;
  durationMs: number;
}

/**
 * How a run ended:
 * - completed: `completed` event (the run's work is done, even if a stop raced it);
 * - stopped:   `stopped` event after a cancel (or a SIGTERM from outside the node);
 * - failed:    `failed` event, non-zero exit (bad config, dataset, diverged, exception);
 * - crashed:   ended without a final event (killed, OOM, segfault, could not start);
 * - timed_out: over the time limit, stopped by the node (`stopped` is set when it checkpointed);
 * - lost:      the node is shutting down and stopped it (`stopped` set when it checkpointed).
 */
export type TrainerOutcome =
  | (OutcomeBase & { kind: 'completed'; completed: CompletedEvent })
  | (OutcomeBase & { kind: 'stopped'; stopped: StoppedEvent })
  | (OutcomeBase & { kind: 'failed'; failed: FailedEvent })
  | (OutcomeBase & { kind: 'crashed'; spawnError: string | null })
  | (OutcomeBase & { kind: 'timed_out'; afterSeconds: number; stopped: StoppedEvent | null })
  | (OutcomeBase & { kind: 'lost'; stopped: StoppedEvent | null });

export type TrainerOutcomeKind = TrainerOutcome['kind'];

/** Base of the typed errors `completed()` rejects with; `outcome` has every detail. */
export class TrainerExitError extends Error {
  constructor(
    public readonly outcome: TrainerOutcome,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}
export class TrainerStoppedError extends TrainerExitError {}
export class TrainerFailedError extends TrainerExitError {}
export class TrainerCrashedError extends TrainerExitError {}
export class TrainerTimedOutError extends TrainerExitError {}
export class TrainerLostError extends TrainerExitError {}

/** The typed error for an outcome, or null for `completed`. */
export function outcomeError(o: TrainerOutcome): TrainerExitError | null {
  switch (o.kind) {
    case 'completed':
      return null;
    case 'stopped':
      return new TrainerStoppedError(o, `trainer stopped at epoch ${o.stopped.epoch} step ${o.stopped.step} (${o.stopped.reason})`);
    case 'failed':
      return new TrainerFailedError(o, `trainer failed (exit ${o.exitCode}): ${o.failed.error_type}: ${o.failed.message}`);
    case 'crashed':
      return new TrainerCrashedError(o, `trainer crashed: ${describeExit(o)}${o.spawnError ? `: ${o.spawnError}` : ''}`);
    case 'timed_out':
      return new TrainerTimedOutError(o, `trainer timed out after ${o.afterSeconds} s`);
    case 'lost':
      return new TrainerLostError(o, `trainer stopped because the node is shutting down`);
  }
}

export function describeExit(o: { exitCode: number | null; signal: string | null }): string {
  if (o.signal) return `killed by ${o.signal}`;
  if (o.exitCode !== null) return `exit code ${o.exitCode}`;
  return 'did not start';
}

export interface TrainerProcessOptions {
  python: string;
  /** Folder holding the cvtrain package (put on PYTHONPATH). */
  trainersDir: string;
  configPath: string;
  /** `GPU-…` uuid or index for CUDA_VISIBLE_DEVICES; null runs on CPU (no GPU visible). */
  gpu: string | null;
  /** Wall-time limit from spawn; null for none. */
  timeoutMs: number | null;
  /** SIGTERM -> SIGKILL delay. */
  graceMs: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  tailLines?: number;
  tailBytes?: number;
}

export interface TrainerProcessEvents {
  /** A valid trainer event, in the order the trainer wrote them. */
  event: [TrainerEvent];
  /** A stdout/stderr line (human log). */
  log: [TrainerLogLine];
  /** A line on fd 3 that is not a valid event: reported, never fatal. */
  invalid: [InvalidEventLine];
  /** The process is running (pid known). */
  spawn: [number];
  /** Exactly once, with the same outcome `result` resolves to. */
  exit: [TrainerOutcome];
}

export class TrainerProcess extends EventEmitter<TrainerProcessEvents> {
  /** Resolves once, when the process and its pipes are gone; never rejects. */
  readonly result: Promise<TrainerOutcome>;
  private resolveResult!: (o: TrainerOutcome) => void;
  private child: ChildProcess | null = null;
  private startedAt = 0;
  private stopReason: StopReason | null = null;
  private killTimer: NodeJS.Timeout | null = null;
  private limitTimer: NodeJS.Timeout | null = null;
  private killedAfterGrace = false;
  private lastEvent: TrainerEvent | null = null;
  private finalEvent: FinalEvent | null = null;
  private readonly stderrTail: TailBuffer;
  private readonly stdoutTail: TailBuffer;
  private ended = false;

  constructor(private readonly opts: TrainerProcessOptions) {
    super();
    this.stderrTail = new TailBuffer(opts.tailLines ?? TAIL_MAX_LINES, opts.tailBytes ?? TAIL_MAX_BYTES);
    this.stdoutTail = new TailBuffer(opts.tailLines ?? TAIL_MAX_LINES, opts.tailBytes ?? TAIL_MAX_BYTES);
    this.result = new Promise((resolve) => (this.resolveResult = resolve));
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get stopRequested(): StopReason | null {
    return this.stopReason;
  }

  get running(): boolean {
    return this.child !== null && !this.ended;
  }

  /** Starts the process; call once. Listeners should be attached before. */
  start(): this {
    if (this.child) throw new Error('TrainerProcess.start() called twice');
    const { opts } = this;
    const pythonPath = [opts.trainersDir, process.env.PYTHONPATH].filter(Boolean).join(':');
    this.startedAt = Date.now();
    const child = spawn(
      opts.python,
      ['-m', 'cvtrain', 'train', '--config', opts.configPath, '--events', 'fd:3'],
      {
        cwd: opts.cwd,
        env: {
          ...process.env,
          ...opts.env,
          PYTHONPATH: pythonPath,
          // Python buffers stdout when it is a pipe; live logs need every line as it is printed.
          PYTHONUNBUFFERED: '1',
          // nvidia-smi numbers GPUs in PCI order and CUDA by default fastest-first; a uuid (or
          // PCI order) makes "this slot's GPU" mean the same device to both.
          CUDA_DEVICE_ORDER: 'PCI_BUS_ID',
          CUDA_VISIBLE_DEVICES: opts.gpu ?? '',
        },
        stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
        // Own process group: a kill after the grace period also ends DataLoader workers, which
        // would otherwise keep GPU memory and the pipes alive.
        detached: true,
      },
    );
    this.child = child;

    const events = new LineSplitter((line, truncated) => this.onEventLine(line, truncated), MAX_LINE_BYTES);
    const out = new LineSplitter((line, truncated) => this.onLogLine('stdout', line, truncated), MAX_LINE_BYTES);
    const err = new LineSplitter((line, truncated) => this.onLogLine('stderr', line, truncated), MAX_LINE_BYTES);
    const fd3 = child.stdio[3] as Readable;
    fd3.on('data', (b: Buffer) => events.push(b));
    fd3.on('end', () => events.end());
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stdout!.on('end', () => out.end());
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.stderr!.on('end', () => err.end());
    // A broken pipe on our side is reported through the process ending; do not crash the node.
    for (const s of [fd3, child.stdout!, child.stderr!]) s.on('error', () => {});

    child.on('spawn', () => {
      if (child.pid) this.emit('spawn', child.pid);
      if (opts.timeoutMs !== null && opts.timeoutMs > 0) {
        this.limitTimer = setTimeout(() => void this.stop('timeout'), Math.min(opts.timeoutMs, 2 ** 31 - 1));
      }
    });
    child.on('error', (e) => {
      // spawn failed (interpreter missing, not executable): no 'exit' or 'close' follows.
      if (!child.pid) this.finish(null, null, e.message);
    });
    child.on('exit', () => {
      // Leftover workers of the group would hold the pipes open and delay 'close'.
      this.killGroup();
    });
    child.on('close', (code, signal) => this.finish(code, signal, null));
    return this;
  }

  /**
   * Asks the trainer to stop: SIGTERM (it finishes the step, writes a checkpoint and emits
   * `stopped`), then SIGKILL to the whole group after the grace period. The first reason wins.
   */
  stop(reason: StopReason): Promise<TrainerOutcome> {
    if (this.ended || !this.child) return this.result;
    if (this.stopReason === null) {
      this.stopReason = reason;
      this.signal('SIGTERM');
      this.killTimer = setTimeout(() => {
        if (!this.ended) {
          this.killedAfterGrace = true;
          this.killGroup();
        }
      }, this.opts.graceMs);
    }
    return this.result;
  }

  /** Resolves with the `completed` event, or rejects with the typed error of how it ended. */
  async completed(): Promise<CompletedEvent> {
    const outcome = await this.result;
    if (outcome.kind === 'completed') return outcome.completed;
    throw outcomeError(outcome)!;
  }

  private signal(sig: NodeJS.Signals): void {
    try {
      this.child?.kill(sig);
    } catch {
      // already gone
    }
  }

  private killGroup(): void {
    const pid = this.child?.pid;
    if (!pid) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // ESRCH: nobody left in the group
    }
  }

  private onEventLine(line: string, truncated: boolean): void {
    if (line.trim() === '') return;
    if (truncated) {
      this.emit('invalid', { line: line.slice(0, 200), error: `longer than ${MAX_LINE_BYTES} bytes` });
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (e) {
      this.emit('invalid', { line: line.slice(0, 2000), error: `not JSON: ${(e as Error).message}` });
      return;
    }
    const checked = validateTrainerEvent(parsed);
    if (!checked.ok) {
      this.emit('invalid', { line: line.slice(0, 2000), error: checked.error });
      return;
    }
    const event = checked.value;
    this.lastEvent = event;
    if (event.type === 'completed' || event.type === 'stopped' || event.type === 'failed') this.finalEvent = event;
    this.emit('event', event);
  }

  private onLogLine(stream: 'stdout' | 'stderr', line: string, truncated: boolean): void {
    (stream === 'stderr' ? this.stderrTail : this.stdoutTail).push(line);
    this.emit('log', { stream, line, ts: new Date().toISOString(), truncated });
  }

  private finish(exitCode: number | null, signal: NodeJS.Signals | null, spawnError: string | null): void {
    if (this.ended) return;
    this.ended = true;
    if (this.killTimer) clearTimeout(this.killTimer);
    if (this.limitTimer) clearTimeout(this.limitTimer);
    if (spawnError) this.stderrTail.push(`gpu-node: could not start ${this.opts.python}: ${spawnError}`);
    const base: OutcomeBase = {
      exitCode,
      signal,
      stderrTail: this.stderrTail.text(),
      stdoutTail: this.stdoutTail.text(),
      lastEvent: this.lastEvent,
      stopRequested: this.stopReason,
      killed: this.killedAfterGrace,
      durationMs: Date.now() - this.startedAt,
    };
    const final = this.finalEvent;
    const stopped = final?.type === 'stopped' ? final : null;
    let outcome: TrainerOutcome;
    if (final?.type === 'completed') {
      outcome = { ...base, kind: 'completed', completed: final };
    } else if (this.stopReason === 'timeout') {
      outcome = { ...base, kind: 'timed_out', afterSeconds: Math.round(base.durationMs / 100) / 10, stopped };
    } else if (this.stopReason === 'shutdown') {
      outcome = { ...base, kind: 'lost', stopped };
    } else if (stopped) {
      outcome = { ...base, kind: 'stopped', stopped };
    } else if (final?.type === 'failed') {
      outcome = { ...base, kind: 'failed', failed: final };
    } else {
      outcome = { ...base, kind: 'crashed', spawnError };
    }
    this.emit('exit', outcome);
    this.resolveResult(outcome);
  }
}
