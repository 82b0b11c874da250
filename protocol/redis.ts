// Every Redis name the API and the gpu-node share (gpu-node/PROTOCOL.md). Each carries
// CVTRAIN_REDIS_PREFIX, so several deployments (or test files) share one Redis without seeing
// each other; both sides build their names here, so they cannot spell one differently.

/** The bee-queue queue of PLATFORM jobs (payload: JobPayload). */
export const GPU_QUEUE = 'gpu-training';

/** CVTRAIN_REDIS_PREFIX when unset, and what it may contain (both processes validate it alike). */
export const DEFAULT_REDIS_PREFIX = 'cvtrain:';
export const REDIS_PREFIX_PATTERN = /^[A-Za-z0-9:_-]*$/;

export interface RedisNames {
  prefix: string;
  /** bee-queue's own key prefix (it appends ":<queue>:..."). */
  queuePrefix: string;
  /** The stream of event envelopes, field `data`. */
  eventsStream: string;
  /** The API's consumer group on the events stream. */
  ingestGroup: string;
  /** API -> nodes control messages (cancel, drain). */
  controlChannel: string;
  /** Live trainer stdout/stderr lines of one session. */
  logsChannel(sessionId: string): string;
  /** Pub/sub topics the API's subscriptions listen on. */
  sessionTopic(sessionId: string): string;
  epochsTopic(sessionId: string): string;
  nodesTopic: string;
  /** Revoked API keys and removed members: every replica closes their websocket connections. */
  credentialsTopic: string;
}

export function redisNames(prefix: string): RedisNames {
  return {
    prefix,
    queuePrefix: `${prefix}bq`,
    eventsStream: `${prefix}events`,
    ingestGroup: 'ingest',
    controlChannel: `${prefix}node-control`,
    logsChannel: (id) => `${prefix}logs:${id}`,
    sessionTopic: (id) => `${prefix}session:${id}`,
    epochsTopic: (id) => `${prefix}epochs:${id}`,
    nodesTopic: `${prefix}nodes`,
    credentialsTopic: `${prefix}credentials-revoked`,
  };
}
