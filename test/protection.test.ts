// Request-level protections: CSRF, body size, depth and alias limits, error masking, GraphiQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signUp, startTestApi, type TestApi } from './helpers/api.js';

let api: TestApi;
let prod: TestApi;
beforeAll(async () => {
  [api, prod] = await Promise.all([
    startTestApi({ env: { NODE_ENV: 'development', CVTRAIN_MAX_BODY_BYTES: '4096', CVTRAIN_MAX_DEPTH: '6', CVTRAIN_MAX_ALIASES: '3' } }),
    startTestApi({ env: { NODE_ENV: 'production' } }),
  ]);
});
afterAll(async () => {
  await api?.close();
  await prod?.close().catch(() => undefined);
});

describe('CSRF prevention', () => {
  it('refuses a GET without a header a cross-site page cannot send', async () => {
    const res = await fetch(`${api.url}?query=${encodeURIComponent('{ __typename }')}`, {
      headers: { accept: 'application/json' },
    });
    expect(res.status).toBe(403);
  });

  it('accepts the same GET with a preflight-forcing header', async () => {
    const res = await fetch(`${api.url}?query=${encodeURIComponent('{ __typename }')}`, {
      headers: { accept: 'application/json', 'x-graphql-yoga-csrf': '1' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ data: { __typename: 'Query' } });
  });

  it('refuses "simple" form posts that a cross-site form could submit', async () => {
    for (const type of ['application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain']) {
      const res = await fetch(api.url, {
        method: 'POST',
        headers: { 'content-type': type },
        body: 'query=%7B__typename%7D',
      });
      expect(res.status, type).toBeGreaterThanOrEqual(400);
      expect(res.status, type).toBeLessThan(500);
    }
  });

  it('never runs a mutation over GET', async () => {
    const q = 'mutation { signUp(input: {email: "get@example.com", password: "correct horse battery", organizationName: "G"}) { __typename } }';
    const res = await fetch(`${api.url}?query=${encodeURIComponent(q)}`, {
      headers: { accept: 'application/json', 'x-graphql-yoga-csrf': '1' },
    });
    expect(res.status).toBe(405);
    const rows = await api.orm.em.getConnection().execute(`select 1 from users where email = 'get@example.com'`);
    expect(rows).toHaveLength(0);
  });
});

describe('body size', () => {
  it('refuses a body over the limit with 413 before reading it', async () => {
    const res = await fetch(api.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ __typename }', variables: { pad: 'x'.repeat(5000) } }),
    });
    expect(res.status).toBe(413);
    expect((await res.json()).errors[0].message).toMatch(/exceeds 4096 bytes/);
  });

  it('requires a Content-Length so a streamed body cannot dodge the limit', async () => {
    const stream = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"query":"{ __typename }"}'));
        controller.close();
      },
    });
    const res = await fetch(api.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(411);
  });
});

describe('query limits', () => {
  it('refuses queries deeper than the limit, naming it', async () => {
    const user = await signUp(api, 'Deep');
    const deep = '{ viewer { organization { members { user { id } } } } }';
    expect((await api.gql(deep, {}, user.token)).errors).toBeUndefined();
    const tooDeep = '{ models { edges { node { trainingSessions { edges { node { model { id } } } } } } } }';
    const res = await api.gql(tooDeep, {}, user.token);
    expect(res.data).toBeUndefined();
    expect(res.errors?.[0].message).toMatch(/depth limit/i);
  });

  it('refuses more aliases than the limit', async () => {
    const res = await api.gql('{ a: viewer { role } b: viewer { role } c: viewer { role } d: viewer { role } }');
    expect(res.data).toBeUndefined();
    expect(res.errors?.[0].message).toMatch(/Aliases limit of 3 exceeded, found 4/);
    const fine = await api.gql('{ a: viewer { role } b: viewer { role } c: viewer { role } }');
    expect(fine.data).toEqual({ a: null, b: null, c: null });
  });
});

describe('GraphiQL', () => {
  it('serves GraphiQL to a browser in development and not in production', async () => {
    const html = { accept: 'text/html' };
    const dev = await fetch(api.url, { headers: html });
    expect(dev.status).toBe(200);
    expect(await dev.text()).toMatch(/graphiql/i);
    const p = await fetch(prod.url, { headers: html });
    expect(await p.text()).not.toMatch(/graphiql/i);
  });
});

describe('error masking', () => {
  it('typed errors keep their message in production', async () => {
    const res = await prod.gql('{ models { totalCount } }');
    expect(res.errors?.[0]).toMatchObject({ message: expect.stringMatching(/Sign in first/), extensions: { code: 'UNAUTHENTICATED' } });
  });

  it('masks unexpected errors in production: no message, no stack', async () => {
    const user = await signUp(prod, 'Mask');
    // Break the database underneath the running server: every resolver now fails unexpectedly.
    await prod.orm.close(true);
    const res = await prod.gql('{ models { totalCount } }', {}, user.token);
    expect(res.errors?.[0].message).toBe('Unexpected error.');
    const text = JSON.stringify(res);
    expect(text).not.toMatch(/stack|pool|knex|mikro|\.ts:/i);
  });
});
