// The gpu-node HTTP API (gpu-node/PROTOCOL.md §2): register, heartbeat, claim, uploads, released.
// Nodes authenticate with the join token; they never see database or storage credentials, only
// presigned URLs for the one session they run.
import { timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import { z } from 'zod';
import type { App } from '../../app.js';
import { createLogger, errorFields } from '../../lib/log.js';
import { singleLine } from '../../lib/validate.js';
import { transition } from '../training/lifecycle.js';
import { checkpointSha256, runningOnNode, uploadTarget } from '../training/repository.js';
import { NodeRegistry } from './registry.js';
import { sessionArtifactKey, sessionStorage } from './session-storage.js';

const log = createLogger('node-api');

export const NODE_API_PREFIX = '/node/v1/';
// Node requests are small JSON documents; anything bigger is refused unread.
const MAX_BODY_BYTES = 256 * 1024;
// Presigned URLs handed to nodes live long enough for a large dataset download or checkpoint upload.
const NODE_URL_TTL_S = 6 * 3600;

// nvidia-smi reports "N/A" for some readings (e.g. under MIG): every reading may be null.
const gpu = z.object({
  index: z.number().int().min(0),
  name: singleLine(200),
  uuid: singleLine(200).nullable(),
  memoryTotalMiB: z.number().min(0).nullable(),
  memoryUsedMiB: z.number().min(0).nullable(),
  utilizationPct: z.number().nullable(),
  temperatureC: z.number().nullable(),
  powerW: z.number().nullable(),
});
const nodeId = z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'letters, digits, ".", "_", ":" or "-", at most 128');
const registerBody = z.object({
  nodeId,
  host: singleLine(255).min(1),
  version: singleLine(64).nullable().optional(),
  slots: z.number().int().min(1).max(64),
  gpus: z.array(gpu).max(64),
});
const heartbeatBody = z.object({
  nodeId,
  status: z.enum(['ONLINE', 'DRAINING']),
  gpus: z.array(gpu).max(64),
  runningSessionIds: z.array(z.uuid()).max(64),
});
const claimBody = z.object({ nodeId, attempt: z.number().int().min(1), jobId: singleLine(200) });
const uploadBody = z.object({
  nodeId,
  attempt: z.number().int().min(1),
  kind: z.enum(['checkpoint', 'artifact']),
  // A path relative to the trainer's output dir, e.g. checkpoints/last.pt or export/model.onnx.
  name: z
    .string()
    .max(256)
    .regex(/^[A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$/, 'a relative path of plain names (no "..")'),
  sizeBytes: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
const releasedBody = z.object({ nodeId, attempt: z.number().int().min(1) });

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function createNodeApiHandler(app: App) {
  const token = Buffer.from(app.config.nodeToken);
  const registry = new NodeRegistry(app);

  const authorized = (req: http.IncomingMessage) => {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    const given = Buffer.from(m?.[1] ?? '');
    return given.length === token.length && timingSafeEqual(given, token);
  };

  const routes: Record<string, (body: unknown, sessionId: string | null) => Promise<unknown>> = {
    register: async (body) => {
      const b = parse(registerBody, body);
      await registry.register(b);
      return { heartbeatIntervalMs: app.config.nodeHeartbeatMs, offlineAfterMs: app.config.nodeOfflineMs };
    },
    heartbeat: async (body) => {
      const b = parse(heartbeatBody, body);
      const known = await registry.heartbeat(b);
      if (!known) throw new HttpError(404, 'unknown_node', 'register first');
      // Cancellations also travel here, so one lost pub/sub message cannot leave a trainer running;
      // and a node that was presumed lost (its sessions now run elsewhere) learns to stop them.
      const mine = await runningOnNode(app.sql, b.nodeId);
      const current = new Set(mine.map((m) => m.id));
      const reported = new Set(b.runningSessionIds);
      // A cancel that reached the node before its trainer started ends the job without any event:
      // the session is on this node, cancelled, and the node no longer runs it.
      for (const m of mine) {
        if (m.cancel && !reported.has(m.id)) {
          const cancelled = await app.sql.transaction((tx) =>
            transition(tx, m.id, 'CANCELLED', { attempt: m.attempt, from: ['RUNNING'] }),
          );
          if (cancelled) app.publisher.sessionChanged(cancelled);
        }
      }
      return {
        ok: true,
        cancel: mine.filter((m) => m.cancel && reported.has(m.id)).map((m) => ({ sessionId: m.id, attempt: m.attempt })),
        stop: b.runningSessionIds.filter((id) => !current.has(id)),
      };
    },
    claim: async (body, sessionId) => {
      const b = parse(claimBody, body);
      const session = await app.sql.transaction((tx) =>
        transition(tx, sessionId!, 'RUNNING', {
          attempt: b.attempt,
          from: ['QUEUED'],
          set: { nodeId: b.nodeId, externalJobId: b.jobId, lastEventSeq: 0 },
        }),
      );
      if (!session) {
        throw new HttpError(409, 'stale_attempt', 'this job is not the session\'s current attempt, or the session is not queued');
      }
      app.publisher.sessionChanged(session);
      await registry.touchRunning(b.nodeId);
      const storage = await sessionStorage(app, session);
      const [dv] = await app.sql.query<{
        archive_key: string;
        sha256: string;
        format: string;
        size_bytes: string;
        filename: string;
        storage_profile_id: string | null;
      }>(
        'select archive_key, sha256, format, size_bytes, filename, storage_profile_id from dataset_versions where id = ?',
        [session.datasetVersionId],
      );
      const datasetStorage = await sessionStorage(app, {
        organizationId: session.organizationId,
        storageProfileId: dv.storage_profile_id,
      });
      const dataset = await datasetStorage.presignGet(dv.archive_key, { expiresInSeconds: NODE_URL_TTL_S });
      const resume = session.lastCheckpointKey
        ? await storage.presignGet(session.lastCheckpointKey, { expiresInSeconds: NODE_URL_TTL_S })
        : null;
      const checkpointSha = session.lastCheckpointKey ? await checkpointSha256(app.sql, session.id, session.lastCheckpointKey) : null;
      log.info('session claimed', { sessionId: session.id, attempt: b.attempt, nodeId: b.nodeId, resume: Boolean(resume) });
      return {
        dataset: {
          url: dataset.url,
          headers: dataset.headers,
          sha256: dv.sha256,
          format: dv.format.toLowerCase(),
          sizeBytes: Number(dv.size_bytes),
          filename: dv.filename,
        },
        resume: resume ? { url: resume.url, headers: resume.headers, sha256: checkpointSha } : null,
      };
    },
    uploads: async (body, sessionId) => {
      const b = parse(uploadBody, body);
      const row = await uploadTarget(app.sql, sessionId!);
      if (!row || row.attempt !== b.attempt || row.node_id !== b.nodeId) {
        throw new HttpError(409, 'stale_attempt', 'uploads are for the node running the current attempt');
      }
      const key = sessionArtifactKey(row.organization_id, row.id, b.kind, b.name, row.attempt, b.sha256);
      const storage = await sessionStorage(app, {
        organizationId: row.organization_id,
        storageProfileId: row.storage_profile_id,
      });
      const put = await storage.presignPut(key, { expiresInSeconds: NODE_URL_TTL_S });
      return { url: put.url, headers: put.headers, key, expiresAt: put.expiresAt.toISOString() };
    },
    released: async (body, sessionId) => {
      const b = parse(releasedBody, body);
      log.info('node released a session', { sessionId, nodeId: b.nodeId, attempt: b.attempt });
      return { ok: true };
    },
  };

  return async (req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> => {
    const url = req.url ?? '';
    if (!url.startsWith(NODE_API_PREFIX)) return false;
    try {
      if (!authorized(req)) throw new HttpError(401, 'unauthorized', 'a valid node token is required');
      if (req.method !== 'POST') throw new HttpError(405, 'method_not_allowed', 'node API calls are POST');
      const path = url.slice(NODE_API_PREFIX.length).split('?')[0];
      const m = /^sessions\/([0-9a-f-]{36})\/(claim|uploads|released)$/.exec(path);
      const route = m ? m[2] : path;
      const handler = routes[route];
      if (!handler || (m === null && ['claim', 'uploads', 'released'].includes(route))) {
        throw new HttpError(404, 'not_found', `no node API route ${path}`);
      }
      const body = await readJson(req);
      send(res, 200, await handler(body, m ? m[1] : null));
    } catch (err) {
      if (err instanceof HttpError) {
        send(res, err.status, { error: err.code, message: err.message });
      } else {
        log.error('node API request failed', { url, ...errorFields(err) });
        send(res, 500, { error: 'internal', message: 'unexpected error' });
      }
    }
    return true;
  };
}

function parse<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new HttpError(400, 'bad_request', `${issue.path.join('.') || '(body)'}: ${issue.message}`);
  }
  return r.data;
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'too_large', `bodies are at most ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
  } catch {
    throw new HttpError(400, 'bad_request', 'the body is not JSON');
  }
}

function send(res: http.ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}
