// Subscriptions over HTTP (graphql-yoga's Server-Sent Events) bypass every websocket protection
// (connection and subscription caps, closing on revocation or expiry), so they are refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signUp, startTestApi, type TestApi } from '../helpers/api.js';
import { HTTP_SUBSCRIPTION_REFUSED } from '../../src/graphql/http-subscriptions.js';

let api: TestApi;
let token: string;
beforeAll(async () => {
  api = await startTestApi();
  ({ token } = await signUp(api, 'SSE'));
});
afterAll(async () => {
  await api?.close();
});

async function subscribeOverHttp(accept: string) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 5_000);
  try {
    const res = await fetch(api.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: 'subscription { gpuNodeUpdated { id } }' }),
      signal: ctl.signal,
    });
    // A refused subscription ends its stream at once; an accepted one would stay open until the abort.
    return { status: res.status, body: await res.text() };
  } finally {
    clearTimeout(timer);
  }
}

describe('subscriptions over HTTP', () => {
  it('are refused over Server-Sent Events, and the stream ends at once', async () => {
    const started = Date.now();
    const { body } = await subscribeOverHttp('text/event-stream');
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(body).toContain(HTTP_SUBSCRIPTION_REFUSED);
    expect(body).not.toContain('"data":{');
  });

  it('are refused as a plain JSON request too', async () => {
    const { body } = await subscribeOverHttp('application/graphql-response+json, application/json');
    expect(body).toContain(HTTP_SUBSCRIPTION_REFUSED);
  });
});
