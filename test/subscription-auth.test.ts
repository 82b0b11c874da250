// A subscription outlives the request that opened it: revoking the key (or removing the member)
// must also end the data it streams, not only refuse new subscriptions.
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';

let api: TestApi;
let owner: SignedUp;
beforeAll(async () => {
  api = await startTestApi({ env: { CVTRAIN_SUBSCRIPTION_REAUTH_MS: '200' } });
  owner = await signUp(api, 'Reauth');
});
afterAll(() => api?.close());

async function nodeCall(path: string, body: object) {
  const res = await fetch(api.url.replace(/\/graphql$/, `/node/v1/${path}`), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${api.app.config.nodeToken}` },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(200);
}

describe('open subscriptions and revoked credentials', () => {
  it('a gpuNodeUpdated stream opened with an API key ends (socket closed with 4401) once the key is revoked', async () => {
    const created = ok<{ apiKey: { id: string }; secret: string }>(
      await api.gql(
        `mutation { createApiKey(input: {name: "watcher", role: VIEWER}) { __typename ... on CreateApiKeySuccess { createdApiKey { apiKey { id } secret } } } }`,
        {},
        owner.token,
      ),
      'createApiKey',
      'createdApiKey',
    );
    const client = createClient({
      url: api.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${created.secret}` },
      retryAttempts: 0,
    });
    const received: string[] = [];
    let error: unknown = null;
    const ended = new Promise<void>((resolve) => {
      client.subscribe(
        { query: 'subscription { gpuNodeUpdated { id status } }' },
        {
          next: (msg) => {
            if (msg.data) received.push((msg.data as { gpuNodeUpdated: { id: string } }).gpuNodeUpdated.id);
            if (msg.errors) error = msg.errors;
          },
          error: (err) => {
            error = err;
            resolve();
          },
          complete: () => resolve(),
        },
      );
    });
    const gpus: unknown[] = [];
    await new Promise((r) => setTimeout(r, 300));
    await nodeCall('register', { nodeId: 'reauth-node', host: 'h', version: '1', slots: 1, gpus });
    const beat = () => nodeCall('heartbeat', { nodeId: 'reauth-node', status: 'ONLINE', gpus, runningSessionIds: [] });
    for (let i = 0; i < 3 && received.length === 0; i++) {
      await beat();
      await new Promise((r) => setTimeout(r, 150));
    }
    expect(received.length).toBeGreaterThan(0);

    const revoked = await api.gql(
      'mutation($id: ID!) { revokeApiKey(id: $id) { __typename } }',
      { id: created.apiKey.id },
      owner.token,
    );
    expect(revoked.data.revokeApiKey.__typename).toBe('RevokeApiKeySuccess');
    const deadline = Date.now() + 5000;
    let done = false;
    void ended.then(() => (done = true));
    while (!done && Date.now() < deadline) {
      await beat();
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(done).toBe(true);
    expect((error as { code?: number } | null)?.code).toBe(4401);
    const count = received.length;
    await beat();
    await new Promise((r) => setTimeout(r, 300));
    expect(received.length).toBe(count);
    await client.dispose();
  });
});
