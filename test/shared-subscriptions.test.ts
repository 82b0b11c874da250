// sharedSubscribe (src/graphql/shared-subscriptions.ts): identical subscriptions of one
// organization execute each shared event once; anything that decides the result keeps them apart.
import { GraphQLInt, GraphQLObjectType, GraphQLSchema, GraphQLString, parse, type ExecutionResult } from 'graphql';
import { describe, expect, it } from 'vitest';
import { sharedSubscribe } from '../src/graphql/shared-subscriptions.js';

interface Ev {
  n: number;
}

function setup() {
  let resolved = 0;
  const sources: { push(e: Ev): void; end(): void }[] = [];
  const Event = new GraphQLObjectType({
    name: 'Event',
    fields: {
      n: { type: GraphQLInt, resolve: (e: Ev) => (resolved++, e.n) },
      tag: { type: GraphQLString, args: { suffix: { type: GraphQLString } }, resolve: (e: Ev, a: { suffix?: string }) => `${e.n}${a.suffix ?? ''}` },
    },
  });
  const schema = new GraphQLSchema({
    query: new GraphQLObjectType({ name: 'Query', fields: { ok: { type: GraphQLInt, resolve: () => 1 } } }),
    subscription: new GraphQLObjectType({
      name: 'Subscription',
      fields: {
        events: {
          type: Event,
          subscribe: () => {
            // A per-subscriber queue fed with the same event objects, like events/topics.ts.
            const queue: (Ev | null)[] = [];
            let wake: (() => void) | null = null;
            sources.push({ push: (e) => (queue.push(e), wake?.()), end: () => (queue.push(null), wake?.()) });
            return (async function* () {
              for (;;) {
                while (!queue.length) await new Promise<void>((r) => (wake = r));
                const e = queue.shift()!;
                if (e === null) return;
                yield e;
              }
            })();
          },
          resolve: (e: Ev) => e,
        },
      },
    }),
  });
  const ctx = (orgId: string | null) => ({ principal: async () => (orgId ? { orgId } : null) });
  return { schema, sources, ctx, resolved: () => resolved };
}

async function take(it: AsyncIterator<ExecutionResult>, n: number) {
  const out: ExecutionResult[] = [];
  for (let i = 0; i < n; i++) out.push((await it.next()).value);
  return out;
}

describe('sharedSubscribe', () => {
  const doc = parse('subscription($s: String) { events { n tag(suffix: $s) } }');

  it('executes a shared event once for identical subscriptions of one organization', async () => {
    const t = setup();
    const subs = await Promise.all(
      [1, 2, 3].map(() => sharedSubscribe({ schema: t.schema, document: doc, variableValues: { s: '!' }, contextValue: t.ctx('org-a') })),
    );
    const events = [{ n: 1 }, { n: 2 }];
    for (const e of events) for (const s of t.sources) s.push(e);
    const got = await Promise.all(subs.map((s) => take(s as AsyncIterator<ExecutionResult>, 2)));
    for (const g of got) expect(g).toEqual([{ data: { events: { n: 1, tag: '1!' } } }, { data: { events: { n: 2, tag: '2!' } } }]);
    expect(t.resolved()).toBe(2); // once per event, not once per subscriber
  });

  it('keeps organizations, variables and anonymous callers apart', async () => {
    const t = setup();
    const subs = await Promise.all([
      sharedSubscribe({ schema: t.schema, document: doc, variableValues: { s: '!' }, contextValue: t.ctx('org-a') }),
      sharedSubscribe({ schema: t.schema, document: doc, variableValues: { s: '!' }, contextValue: t.ctx('org-b') }),
      sharedSubscribe({ schema: t.schema, document: doc, variableValues: { s: '?' }, contextValue: t.ctx('org-a') }),
      sharedSubscribe({ schema: t.schema, document: doc, variableValues: { s: '!' }, contextValue: t.ctx(null) }),
    ]);
    const e = { n: 5 };
    for (const s of t.sources) s.push(e);
    const got = await Promise.all(subs.map((s) => take(s as AsyncIterator<ExecutionResult>, 1)));
    expect(got.map((g) => (g[0]!.data as { events: { tag: string } }).events.tag)).toEqual(['5!', '5!', '5?', '5!']);
    expect(t.resolved()).toBe(4);
  });

  it('distinct event objects are executed each time, and the stream ends with its source', async () => {
    const t = setup();
    const sub = (await sharedSubscribe({ schema: t.schema, document: doc, contextValue: t.ctx('org-a') })) as AsyncIterator<ExecutionResult>;
    t.sources[0]!.push({ n: 1 });
    t.sources[0]!.push({ n: 1 });
    await take(sub, 2);
    expect(t.resolved()).toBe(2);
    t.sources[0]!.end();
    expect(await sub.next()).toEqual({ value: undefined, done: true });
  });
});
