// Subscriptions execute their selection set once per message, not once per subscriber.
//
// A training event reaches every subscriber of its session as the same object (events/topics.ts
// hands one parsed message to all of them, and the subscription resolvers revive it once). With
// 1,000 subscribers running the same operation, GraphQL would otherwise execute the same selection
// set on the same object 1,000 times per event. This subscribe function keeps the GraphQL
// semantics (the source stream comes from each field's own `subscribe`, with its own context,
// authorization and replay) and only shares the per-event `execute`, keyed by the event object and
// by what decides the result: the document, operation, variables and the caller's organization
// (every row a result can show is scoped to it; roles change what a caller may do, not what it
// reads). Events that are not shared objects (replayed rows, per-subscriber copies) simply miss
// the cache.
import {
  createSourceEventStream,
  execute,
  GraphQLError,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { RequestContext } from './context.js';

type MaybePromise<T> = T | Promise<T>;

const resultsByEvent = new WeakMap<object, Map<string, MaybePromise<ExecutionResult>>>();
const documentIds = new WeakMap<DocumentNode, number>();
let nextDocumentId = 0;

function documentId(document: DocumentNode): number {
  let id = documentIds.get(document);
  if (id === undefined) {
    id = nextDocumentId++;
    documentIds.set(document, id);
  }
  return id;
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof (value as AsyncIterable<unknown> | null)?.[Symbol.asyncIterator] === 'function';
}

/** What decides a subscription's result for a given event, or null when it cannot be shared. */
async function sharingKey(args: ExecutionArgs): Promise<string | null> {
  const ctx = args.contextValue as Partial<RequestContext> | undefined;
  const principal = ctx?.principal ? await ctx.principal() : null;
  if (!principal) return null;
  let variables: string;
  try {
    variables = JSON.stringify(args.variableValues ?? {});
  } catch {
    return null;
  }
  // The document object is the same for the same query text (yoga caches parsed documents);
  // a different object only costs a cache miss.
  return `${documentId(args.document)}\u0000${args.operationName ?? ''}\u0000${variables}\u0000${principal.orgId}`;
}

function executeEvent(args: ExecutionArgs, key: string | null, event: unknown): MaybePromise<ExecutionResult> {
  if (key === null || event === null || typeof event !== 'object') return execute({ ...args, rootValue: event });
  let results = resultsByEvent.get(event);
  if (!results) {
    results = new Map();
    resultsByEvent.set(event, results);
  }
  let result = results.get(key);
  if (!result) {
    result = execute({ ...args, rootValue: event });
    results.set(key, result);
  }
  return result;
}

/** GraphQL's subscribe, with the per-event execution shared between identical subscriptions. */
export async function sharedSubscribe(args: ExecutionArgs): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
  const source = await createSourceEventStream(args);
  if (!isAsyncIterable(source)) return source as ExecutionResult;
  const key = await sharingKey(args);
  const events = source[Symbol.asyncIterator]();
  const operation = args.document.definitions.find((d) => d.kind === 'OperationDefinition');
  const iterator: AsyncIterableIterator<ExecutionResult> = {
    async next() {
      let step: IteratorResult<unknown>;
      try {
        step = await events.next();
      } catch (error) {
        // As graphql's own subscribe does: the source's error, located at the operation.
        throw error instanceof GraphQLError
          ? error
          : new GraphQLError((error as Error)?.message ?? String(error), { nodes: operation, originalError: error as Error });
      }
      if (step.done) return { value: undefined, done: true };
      return { value: await executeEvent(args, key, step.value), done: false };
    },
    async return() {
      await events.return?.();
      return { value: undefined, done: true };
    },
    async throw(error: unknown) {
      await events.return?.();
      throw error;
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}

export function useSharedSubscriptionExecution(): Plugin {
  return {
    onSubscribe({ setSubscribeFn }) {
      setSubscribeFn(sharedSubscribe as Parameters<typeof setSubscribeFn>[0]);
    },
  };
}
