// The GraphQL-over-HTTP spec audits from graphql-http, run against the real server.
import { serverAudits } from 'graphql-http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from './helpers/api.js';

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi();
});
afterAll(() => api?.close());

describe('GraphQL over HTTP audits', () => {
  it('passes every audit with no error (warnings are reported, not failed)', async () => {
    const results = await Promise.all(serverAudits({ url: api.url }).map(async (audit) => ({ audit, result: await audit.fn() })));
    const failed = results.filter((r) => r.result.status === 'error');
    const warned = results.filter((r) => r.result.status === 'warn');
    if (warned.length) {
      console.info(`graphql-http warnings:\n${warned.map((w) => `  ${w.audit.name}: ${'reason' in w.result ? w.result.reason : ''}`).join('\n')}`);
    }
    const counts = { ok: 0, notice: 0, warn: 0, error: 0 } as Record<string, number>;
    for (const r of results) counts[r.result.status]++;
    console.info(`graphql-http audits: ${JSON.stringify(counts)}`);
    expect(results.length).toBeGreaterThan(30);
    expect(counts.ok).toBeGreaterThan(30);
    expect(failed.map((f) => `${f.audit.name}: ${'reason' in f.result ? f.result.reason : ''}`)).toEqual([]);
  });
});
