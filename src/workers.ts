// Background work of an API process: the event ingester and the reaper. Several API replicas
// may all run them: the consumer group shares the stream, and the reaper's updates are atomic.
import type { App } from './app.js';
import { EventIngester } from './events/ingester.js';
import { Reaper } from './monitor/reaper.js';

export interface Workers {
  ingester: EventIngester;
  reaper: Reaper;
  stop(): Promise<void>;
}

export function startWorkers(app: App): Workers {
  const ingester = new EventIngester(app.config.redisUrl, app.redisNames, app.sql, app.orchestrator, app.publisher);
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
