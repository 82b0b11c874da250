// The daemon assembled: interpreter and GPUs found, outbox and control channel connected,
// registered with the API, one worker per slot. `startGpuNode` is what main.ts, `npm start`'s
// local node and the tests call; `stop()` is the clean SIGTERM path of PROTOCOL.md §5.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createLogger, type Logger } from '../src/lib/log.js';
import { NodeApiClient } from './api-client.js';
import { REPO_ROOT, type NodeConfig } from './config.js';
import { ControlChannel } from './control.js';
import { DatasetCache } from './dataset-cache.js';
import { queryGpus, type Gpu } from './gpus.js';
import { Heartbeat } from './heartbeat.js';
import type { Slot } from './job-runner.js';
import { RedisLiveLogs } from './live-logs.js';
import { Outbox } from './outbox.js';
import { resolvePython, type PythonInfo } from './python.js';
import { SlotWorker } from './worker.js';

export interface GpuNode {
  readonly nodeId: string;
  readonly slots: Slot[];
  readonly python: PythonInfo;
  readonly outbox: Outbox;
  readonly workers: SlotWorker[];
  readonly heartbeat: Heartbeat;
  /** Sessions this node has claimed and is running now (what its heartbeats report). */
  runningSessionIds(): string[];
  /** Stop taking jobs; running ones finish; heartbeats say DRAINING. */
  drain(): void;
  /**
   * Clean shutdown: stop taking jobs, SIGTERM the trainers, wait for their checkpoint uploads,
   * give their sessions back, flush the outbox. Idempotent.
   */
  stop(): Promise<void>;
  /** Resolves when stop() has finished (whoever called it). */
  readonly stopped: Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Slots to use instead of discovery (tests); discovery runs nvidia-smi. */
  gpus?: Gpu[];
}

export function nodeVersion(): string {
  try {
    return (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

/** Slots from GPUs: one per GPU (at most CVTRAIN_NODE_SLOTS), else CPU slots (one by default). */
export function planSlots(gpus: Gpu[], override: number | null): Slot[] {
  if (gpus.length > 0) {
    const n = override ? Math.min(override, gpus.length) : gpus.length;
    return gpus.slice(0, n).map((gpu, index) => ({ index, gpu }));
  }
  return Array.from({ length: override ?? 1 }, (_, index) => ({ index, gpu: null }));
}

export async function startGpuNode(config: NodeConfig, opts: StartOptions = {}): Promise<GpuNode> {
  const log = opts.logger ?? createLogger('gpu-node');
  const python = await resolvePython(config.python);
  log.info('trainer interpreter', { python: python.python, torch: python.torchVersion, cuda: python.cudaAvailable });

  let discovered: Gpu[] = opts.gpus ?? [];
  if (!opts.gpus) {
    const q = await queryGpus();
    if (q.ok) discovered = q.gpus;
    else log.info('no GPUs found; running one CPU slot', { reason: q.reason });
  }
  const slots = planSlots(discovered, config.slots);
  log.info(`slots: ${slots.map((s) => (s.gpu ? `GPU ${s.gpu.index} ${s.gpu.name}` : 'CPU')).join(', ')}`, { nodeId: config.nodeId });

  const outbox = new Outbox({
    redisUrl: config.redisUrl,
    prefix: config.redisPrefix,
    dir: path.join(config.dataDir, 'outbox'),
    nodeId: config.nodeId,
    logger: log.child('outbox'),
  }).start();
  const datasets = new DatasetCache({ dir: path.join(config.dataDir, 'datasets'), keep: config.datasetCacheKeep, logger: log.child('datasets') });
  const api = new NodeApiClient({ apiUrl: config.apiUrl, token: config.nodeToken });
  const deps = { config, python: python.python, api, outbox, datasets, liveLogs: new RedisLiveLogs(outbox.redis, config.redisPrefix), logger: log };

  let shuttingDown = false;
  let draining = false;
  const workers = slots.map((slot) => new SlotWorker(slot, deps, log.child(`slot${slot.index}`), () => shuttingDown));
  const running = () => workers.flatMap((w) => (w.current ? [w.current] : []));
  // What the API is told runs here, and what its "stop" answers apply to: claimed jobs only
  // (JobRunner.claimed). A job still claiming is settled by the claim's answer.
  const claimedSessionIds = () => running().flatMap((r) => (r.claimed ? [r.sessionId] : []));
  // Reported in heartbeats: claimed jobs, and jobs that ended but whose events (their end among
  // them) Redis has not accepted yet. The API queues a session again when a live node stops
  // reporting it (src/monitor/reaper.ts); a job that finished during a Redis outage has not.
  // The API takes at most 64 ids; claimed jobs come first.
  const reportedSessionIds = () => [...new Set([...claimedSessionIds(), ...outbox.undeliveredSessionIds()])].slice(0, 64);

  // Live stats for heartbeats; without GPUs (or with test GPUs) there is nothing to poll.
  const gpuStats = async (): Promise<Gpu[]> => {
    if (opts.gpus || discovered.length === 0) return discovered;
    const q = await queryGpus();
    return q.ok ? q.gpus : discovered;
  };

  const cancel = (sessionId: string, attempt: number) => {
    for (const r of running()) {
      if (r.sessionId === sessionId && r.attempt === attempt && r.stopping === null) {
        log.info('cancel received: stopping the trainer', { session: sessionId, attempt });
        r.cancel();
      }
    }
  };

  const heartbeat = new Heartbeat({
    api,
    nodeId: config.nodeId,
    version: nodeVersion(),
    slots: slots.length,
    logger: log.child('heartbeat'),
    gpus: gpuStats,
    runningSessionIds: reportedSessionIds,
    status: () => (draining || shuttingDown ? 'DRAINING' : 'ONLINE'),
    // The beat repeats cancellations (a pub/sub message may have been missed) and names sessions
    // that were queued again elsewhere while this node was presumed lost.
    onAnswer: (answer) => {
      for (const c of answer.cancel) cancel(c.sessionId, c.attempt);
      for (const r of running()) {
        if (r.claimed && answer.stop.includes(r.sessionId) && r.stopping === null) {
          log.warn('the API queued this session elsewhere: stopping its trainer without giving it back', { session: r.sessionId, attempt: r.attempt });
          r.stopStale();
        }
      }
    },
  });

  const drain = () => {
    if (draining || shuttingDown) return;
    draining = true;
    log.info('draining: no new jobs; running jobs finish');
    for (const w of workers) void w.close(2 ** 31 - 1);
    void heartbeat.beatNow();
  };

  const control = new ControlChannel({
    redisUrl: config.redisUrl,
    prefix: config.redisPrefix,
    nodeId: config.nodeId,
    logger: log.child('control'),
    onCancel: cancel,
    onDrain: drain,
  });

  try {
    await control.start();
    await heartbeat.start();
    await Promise.all(workers.map((w) => w.start()));
  } catch (err) {
    await heartbeat.stop();
    await control.stop();
    await Promise.all(workers.map((w) => w.close(1)));
    await outbox.close(1000);
    throw err;
  }
  log.info('gpu-node ready', { nodeId: config.nodeId, slots: slots.length });

  let stopping: Promise<void> | null = null;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      shuttingDown = true;
      log.info('shutting down: no new jobs; running trainers checkpoint and their sessions are given back');
      void heartbeat.beatNow();
      const closing = workers.map((w) => w.close(config.shutdownTimeoutMs));
      for (const r of running()) r.shutdown();
      const deadline = new Promise<void>((r) => setTimeout(r, config.shutdownTimeoutMs + 5000).unref());
      await Promise.race([Promise.all(closing), deadline]);
      await heartbeat.stop();
      await control.stop();
      const left = await outbox.close(10_000);
      log.info('gpu-node stopped', { undeliveredEvents: left });
      resolveStopped();
    })();
    return stopping;
  };

  return {
    nodeId: config.nodeId,
    slots,
    python,
    outbox,
    workers,
    heartbeat,
    runningSessionIds: claimedSessionIds,
    drain,
    stop,
    stopped,
  };
}
