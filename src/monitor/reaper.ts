// Periodic recovery: nodes that stopped heartbeating become OFFLINE, and their running sessions
// are queued again on a new attempt (resuming from the last uploaded checkpoint), or cancelled
// when a cancel was pending. The same happens to a session that a live node has stopped listing
// as running (its job was lost on the node: a crash between claim and start, a bug), so no session
// stays RUNNING with nothing running it.
import type { Redis } from 'ioredis';
import type { App } from '../app.js';
import { ingestCaughtUp } from '../events/ingester.js';
import { createRedis } from '../redis.js';
import { createLogger, errorFields } from '../lib/log.js';
import { recoverLost } from '../modules/training/lifecycle.js';
import { NodeRegistry } from '../modules/nodes/registry.js';
import type { TrainingSessionRecord } from '../modules/training/records.js';
import { droppedByLiveNodes, runningOnLostNodes } from '../modules/training/repository.js';

const log = createLogger('reaper');

// How often to look; recovery time is about the offline window plus this.
export const REAPER_INTERVAL_MS = 1000;

export class Reaper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private readonly registry: NodeRegistry;
  private redis: Redis | null = null;

  constructor(private readonly app: App) {
    this.registry = new NodeRegistry(app);
  }

  start(): void {
    this.timer = setInterval(() => {
      if (!this.running) this.running = this.tick().finally(() => (this.running = null));
    }, REAPER_INTERVAL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
    this.redis?.disconnect();
    this.redis = null;
  }

  async tick(): Promise<void> {
    try {
      const lost = await this.registry.markSilentOffline();
      for (const n of lost) log.warn('gpu-node went silent; marking it OFFLINE', { nodeId: n.id });
      // Also sessions left on nodes found OFFLINE earlier (an API restart between the two steps).
      const orphans = await runningOnLostNodes(this.app.sql, this.app.config.nodeOfflineMs);
      for (const session of orphans) await this.recover(session, `gpu-node ${session.nodeId ?? '?'} stopped heartbeating`);
      // Sessions a live node's heartbeats have stopped listing for the offline window.
      const dropped = await droppedByLiveNodes(this.app.sql, this.app.config.nodeOfflineMs);
      // Its last events may still wait in the stream (the node reports a job until Redis has them
      // all, not until they are applied): only once the ingester has applied everything.
      // With Redis unreachable that is unknown, and the round ends here; the silent-node recovery
      // above does not depend on Redis and has already run.
      if (dropped.length > 0) {
        this.redis ??= createRedis(this.app.config, 'reaper', { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 2000 });
        if (!(await ingestCaughtUp(this.redis, this.app.redisNames).catch(() => false))) return;
      }
      for (const session of dropped) await this.recover(session, `gpu-node ${session.nodeId} no longer runs it`);
    } catch (err) {
      log.warn('reaper round failed', errorFields(err));
    }
  }

  private async recover(session: TrainingSessionRecord, reason: string) {
    const { orchestrator, publisher } = this.app;
    const result = await this.app.sql.transaction((tx) => recoverLost(tx, session, reason));
    if (!result.session) return;
    log.info(result.requeued ? 'queued a session again' : 'cancelled a session', {
      sessionId: session.id,
      attempt: result.session.attempt,
      reason,
    });
    publisher.sessionChanged(result.session);
    if (result.requeued) await orchestrator.submitQueued(result.session);
  }
}
