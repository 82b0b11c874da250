// Background work of an API process: the event ingester and the reaper. Several API replicas
// may all run them: the consumer group shares the stream, and the reaper's updates are atomic.
import type { App } from './app.js';
import { EventIngester } from './events/ingester.js';
import { sessionStorage } from './modules/nodes/session-storage.js';
import { Reaper } from './monitor/reaper.js';

export interface Workers {
  ingester: EventIngester;
  reaper: Reaper;
  stop(): Promise<void>;
}

export function startWorkers(app: App): Workers {
  const ingester = new EventIngester(app.config.redisUrl, app.redisNames, app.sql, app.orchestrator, app.publisher, async (owner, keys) => {
    const storage = await sessionStorage(app, owner);
    await Promise.all(keys.map((key) => storage.delete(key)));
  });
  const reaper = new Reaper(app);
  ingester.start();
  reaper.start();
  return {
    ingester,
    reaper,
    async stop() {
      await Promise.all([ingester.stop(), reaper.stop()]);
    },
  };
}
