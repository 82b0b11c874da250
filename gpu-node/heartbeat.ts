// Registration and heartbeats (PROTOCOL.md §2): the API marks a node OFFLINE when beats stop and
// re-queues its sessions, so beats must keep going while trainers run, and a 404 (the API forgot
// the node, e.g. its database was reset) means register again rather than give up.
import os from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from '../src/lib/log.js';
import { NodeApiUnavailableError, NodeUnauthorizedError, type NodeApiClient, type RegisterAnswer } from './api-client.js';
import type { Gpu } from './gpus.js';

export interface HeartbeatOptions {
  api: NodeApiClient;
  nodeId: string;
  version: string;
  slots: number;
  logger: Logger;
  gpus: () => Promise<Gpu[]>;
  runningSessionIds: () => string[];
  status: () => 'ONLINE' | 'DRAINING';
  /** What an accepted beat asks of the node (PROTOCOL.md §2). */
  onAnswer?: (answer: { cancel: { sessionId: string; attempt: number }[]; stop: string[] }) => void;
}

export class Heartbeat {
  private timer: NodeJS.Timeout | null = null;
  private readonly abort = new AbortController();
  private beating: Promise<void> | null = null;
  answer: RegisterAnswer | null = null;
  beats = 0;

  constructor(private readonly opts: HeartbeatOptions) {}

  /**
   * Registers (retrying while the API is unreachable), then beats every interval.
   * A 401 is thrown: a node with a wrong token must not pretend to run.
   */
  async start(): Promise<RegisterAnswer> {
    const answer = await this.register();
    this.schedule(answer.heartbeatIntervalMs);
    return answer;
  }

  /** Sends one beat now (e.g. to announce DRAINING at once). */
  beatNow(): Promise<void> {
    return this.beat();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.beating?.catch(() => {});
  }

  private async register(): Promise<RegisterAnswer> {
    for (let wait = 1000; ; wait = Math.min(wait * 2, 30_000)) {
      try {
        const answer = await this.opts.api.register(
          {
            nodeId: this.opts.nodeId,
            host: os.hostname(),
            version: this.opts.version,
            slots: this.opts.slots,
            gpus: await this.opts.gpus(),
          },
          // One try per round: this loop does the backing off, and says so in the log each time.
          { signal: this.abort.signal, attempts: 1 },
        );
        this.answer = answer;
        this.opts.logger.info('registered with the API', { nodeId: this.opts.nodeId, heartbeatIntervalMs: answer.heartbeatIntervalMs });
        return answer;
      } catch (err) {
        if (err instanceof NodeUnauthorizedError || this.abort.signal.aborted) throw err;
        if (!(err instanceof NodeApiUnavailableError)) throw err;
        this.opts.logger.warn('API unreachable; registering again soon', { error: err.message, retryInMs: wait });
        await delay(wait, undefined, { signal: this.abort.signal });
      }
    }
  }

  private schedule(intervalMs: number): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => {
      // Never two beats at once: a slow API must not pile up requests.
      if (!this.beating) void this.beat();
    }, intervalMs);
  }

  private beat(): Promise<void> {
    const run = async () => {
      try {
        const r = await this.opts.api.heartbeat(
          {
            nodeId: this.opts.nodeId,
            status: this.opts.status(),
            gpus: await this.opts.gpus(),
            runningSessionIds: this.opts.runningSessionIds(),
          },
          { signal: this.abort.signal },
        );
        this.beats++;
        if (r.ok) {
          if (r.cancel.length > 0 || r.stop.length > 0) this.opts.onAnswer?.({ cancel: r.cancel, stop: r.stop });
        } else {
          this.opts.logger.warn('the API does not know this node (404); registering again');
          const answer = await this.register();
          this.schedule(answer.heartbeatIntervalMs);
        }
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.opts.logger.warn('heartbeat failed', { error: (err as Error).message });
      }
    };
    this.beating = run().finally(() => (this.beating = null));
    return this.beating;
  }
}
