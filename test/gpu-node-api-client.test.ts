// The node API client: the answers PROTOCOL.md §2 defines come back typed, transient trouble is
// retried, and nothing else is.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeApiClient, NodeApiError, NodeApiUnavailableError, NodeUnauthorizedError } from '../gpu-node/api-client.js';
import { freePort } from './gpu-node-helpers.js';

/** Each request pops the next scripted answer for its path. */
const script = new Map<string, { status: number; body?: unknown; destroy?: boolean }[]>();
const seen: { path: string; auth: string | undefined; body: unknown }[] = [];
let server: http.Server;
let url: string;

beforeAll(async () => {
  server = http.createServer(async (req, res) => {
    let raw = '';
    for await (const c of req) raw += c;
    seen.push({ path: req.url!, auth: req.headers.authorization, body: raw ? JSON.parse(raw) : null });
    const next = script.get(req.url!)?.shift() ?? { status: 500, body: { error: 'unscripted' } };
    if (next.destroy) return void req.socket.destroy();
    res.writeHead(next.status, { 'content-type': 'application/json' }).end(JSON.stringify(next.body ?? {}));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const client = () => new NodeApiClient({ apiUrl: url, token: 'tok', attempts: 4, baseDelayMs: 10, maxDelayMs: 20 });
const claimBody = { nodeId: 'n', attempt: 2, jobId: '7' };
const grant = {
  dataset: { url: '/files/x', headers: { 'x-ms-blob-type': 'BlockBlob' }, sha256: 'a'.repeat(64), format: 'yolo', sizeBytes: 10, filename: 'x.zip' },
  resume: { url: '/files/c', headers: {}, sha256: 'b'.repeat(64) },
};

describe('node API client', () => {
  it('claim: 200 is a grant, sent with the bearer token', async () => {
    script.set('/node/v1/sessions/s1/claim', [{ status: 200, body: grant }]);
    expect(await client().claim('s1', claimBody)).toEqual({ ok: true, grant });
    expect(seen.at(-1)).toEqual({ path: '/node/v1/sessions/s1/claim', auth: 'Bearer tok', body: claimBody });
  });

  it('claim: 409 is a typed refusal, not an error, and is not retried', async () => {
    script.set('/node/v1/sessions/s2/claim', [{ status: 409, body: { error: 'stale_attempt', message: 'session is CANCELLED' } }]);
    const before = seen.length;
    expect(await client().claim('s2', claimBody)).toEqual({ ok: false, conflict: 'stale_attempt', message: 'session is CANCELLED' });
    expect(seen.length - before).toBe(1);
  });

  it('5xx and dropped connections are retried until an answer comes', async () => {
    script.set('/node/v1/sessions/s3/claim', [{ status: 503 }, { status: 0, destroy: true }, { status: 200, body: grant }]);
    expect(await client().claim('s3', claimBody)).toEqual({ ok: true, grant });
  });

  it('retries run out: NodeApiUnavailableError naming the last problem', async () => {
    script.set('/node/v1/sessions/s4/claim', [{ status: 502 }, { status: 502 }, { status: 502 }, { status: 502 }]);
    const err = await client().claim('s4', claimBody).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NodeApiUnavailableError);
    expect((err as Error).message).toMatch(/after 4 tries \(HTTP 502/);

    const down = new NodeApiClient({ apiUrl: `http://127.0.0.1:${await freePort()}`, token: 't', attempts: 2, baseDelayMs: 5 });
    await expect(down.claim('s', claimBody)).rejects.toBeInstanceOf(NodeApiUnavailableError);
  });

  it('401 is NodeUnauthorizedError at once; other 4xx are NodeApiError at once', async () => {
    script.set('/node/v1/register', [{ status: 401, body: { error: 'unauthorized', message: 'bad token' } }]);
    const err = await client()
      .register({ nodeId: 'n', host: 'h', version: '1', slots: 1, gpus: [] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NodeUnauthorizedError);
    expect((err as Error).message).toMatch(/CVTRAIN_NODE_TOKEN/);

    script.set('/node/v1/sessions/s5/uploads', [{ status: 400, body: { error: 'bad_request', message: 'name is required' } }]);
    const bad = await client()
      .requestUpload('s5', { nodeId: 'n', attempt: 1, kind: 'artifact', name: '', sizeBytes: 1, sha256: 'a'.repeat(64) })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(NodeApiError);
    expect(bad).not.toBeInstanceOf(NodeUnauthorizedError);
    expect((bad as NodeApiError).code).toBe('bad_request');
  });

  it('a grant without headers gets empty headers; non-string header values are dropped', async () => {
    const bare = { dataset: { ...grant.dataset, headers: { ok: 'yes', bad: 1 } }, resume: { url: '/c', sha256: 'b'.repeat(64) } };
    script.set('/node/v1/sessions/s6/claim', [{ status: 200, body: bare }]);
    const r = await client().claim('s6', claimBody);
    expect(r).toEqual({ ok: true, grant: { dataset: { ...grant.dataset, headers: { ok: 'yes' } }, resume: { url: '/c', headers: {}, sha256: 'b'.repeat(64) } } });
  });

  it('heartbeat: cancellations and stops from the answer; 404 unknown_node is a typed answer; register reads the intervals', async () => {
    script.set('/node/v1/heartbeat', [{ status: 200, body: { ok: true, cancel: [{ sessionId: 's', attempt: 2 }, { sessionId: 3 }], stop: ['t', 4] } }, { status: 200, body: { ok: true } }]);
    const beat = { nodeId: 'n', status: 'ONLINE' as const, gpus: [], runningSessionIds: ['s', 't'] };
    expect(await client().heartbeat(beat)).toEqual({ ok: true, cancel: [{ sessionId: 's', attempt: 2 }], stop: ['t'] });
    expect(await client().heartbeat(beat)).toEqual({ ok: true, cancel: [], stop: [] });
    script.set('/node/v1/heartbeat', [{ status: 404, body: { error: 'unknown_node', message: 'register' } }]);
    expect(await client().heartbeat({ nodeId: 'n', status: 'ONLINE', gpus: [], runningSessionIds: [] })).toEqual({ ok: false, unknownNode: true });
    script.set('/node/v1/register', [{ status: 200, body: { heartbeatIntervalMs: 2000, offlineAfterMs: 6000 } }]);
    expect(await client().register({ nodeId: 'n', host: 'h', version: '1', slots: 1, gpus: [] })).toEqual({ heartbeatIntervalMs: 2000, offlineAfterMs: 6000 });
  });

  it('resolves URLs the API hands out as paths against the API URL', () => {
    expect(client().resolve('/files/x?sig=1')).toBe(`${url}/files/x?sig=1`);
    expect(client().resolve('https://bucket.example/x')).toBe('https://bucket.example/x');
  });
});
