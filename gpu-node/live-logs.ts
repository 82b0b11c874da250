// Live trainer stdout/stderr for whoever watches a session (PROTOCOL.md §4): one pub/sub message
// per line on `P logs:<sessionId>`. Not persisted and not retried: the stderr tail that matters
// for a failure travels in the `crashed` event; a line missed while Redis is down is just gone.
import type { Redis } from 'ioredis';
import { redisNames, type RedisNames } from '../protocol/index.js';
import type { TrainerLogLine } from './trainer-process.js';

export interface LiveLogs {
  publish(sessionId: string, attempt: number, line: TrainerLogLine): void;
}

export class RedisLiveLogs implements LiveLogs {
  private readonly names: RedisNames;

  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.names = redisNames(prefix);
  }

  publish(sessionId: string, attempt: number, line: TrainerLogLine): void {
    const message = JSON.stringify({ sessionId, attempt, stream: line.stream, line: line.line, ts: line.ts });
    this.redis.publish(this.names.logsChannel(sessionId), message).catch(() => {});
  }
}
