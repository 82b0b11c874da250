/**
 * Cross-request cache of query responses, exact rather than time-based.
 *
 * Every transaction that writes an organization's rows bumps that organization's data version
 * (database triggers; migrations/Migration20261126142526.ts). The statement that resolves the
 * caller reads the version too (src/modules/orgs/principal.ts), so checking an entry costs no
 * round trip. An entry is stored under the version read *before* its query ran: a write that
 * commits while the query runs bumps the version past the entry's, so the entry is never served.
 * A hit therefore answers what executing the query at that moment would answer.
 *
 * That holds only for data that lives in those tables and nowhere else, so only queries made
 * entirely of the fields classified below are cached: no presigned links (they expire), nothing
 * from Redis or the platform's node table, no users table. A new object type must be classified
 * here before the schema test passes (test/response-cache.test.ts).
 */
import {
  isAbstractType,
  TypeInfo,
  visit,
  visitWithTypeInfo,
  type DocumentNode,
  type ExecutionResult,
  type GraphQLNamedType,
  type GraphQLSchema,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Principal } from '../modules/orgs/principal.js';

/** Query fields whose answers come from organization-owned rows only. */
export const CACHEABLE_QUERY_FIELDS: ReadonlySet<string> = new Set([
  'trainingSessions',
  'trainingSession',
  'models',
  'model',
  'datasets',
  'dataset',
  'computeProfiles',
  'computeProfile',
]);

/**
 * Every object type of the schema, and whether a cached response may contain its fields. The
 * reason says why not; the root types are handled separately (Query by the set above).
 *
 * `true` promises that every field of the type is computed from rows of tables that carry the
 * version triggers and from nothing else (no clock, no Redis, no storage, no configuration).
 * A field added to such a type that breaks the promise must move its type to a reason.
 */
export const OBJECT_TYPE_CACHING: Readonly<Record<string, true | string>> = {
  TrainingSession: true,
  TrainingProgress: true,
  TrainingAttempt: true,
  TrainingSessionError: true,
  TrainingSessionEpochsConnection: true,
  TrainingSessionEpochsConnectionEdge: true,
  EpochMetric: true,
  Model: true,
  ModelVersion: true,
  ModelTrainingSessionsConnection: true,
  ModelTrainingSessionsConnectionEdge: true,
  Dataset: true,
  DatasetVersion: true,
  DatasetSplit: true,
  DatasetProblem: true,
  ComputeProfile: true,
  PageInfo: true,
  QueryTrainingSessionsConnection: true,
  QueryTrainingSessionsConnectionEdge: true,
  QueryModelsConnection: true,
  QueryModelsConnectionEdge: true,
  QueryDatasetsConnection: true,
  QueryDatasetsConnectionEdge: true,
  QueryComputeProfilesConnection: true,
  QueryComputeProfilesConnectionEdge: true,
  Artifact: 'url is a presigned link made fresh for each request',
  GpuNode: 'platform nodes are not organization data (gpu_nodes has no version)',
  Gpu: 'platform nodes are not organization data',
  User: 'users are not organization rows',
  Membership: 'leads to User',
  Viewer: 'describes the caller and leads to User',
  Organization: 'leads to members and users',
  ApiKey: 'not a dashboard read; kept out to keep key data out of memory',
  StorageProfile: 'not a dashboard read',
  StorageCheck: 'mutation result',
  DatasetVersionUpload: 'holds a presigned upload link',
  TrainingLogLine: 'live only, from Redis',
  AuthPayload: 'mutation result',
  CreatedApiKey: 'mutation result holding a secret',
};

const NOT_CACHEABLE = Symbol('not cacheable');
const ABANDONED_FLIGHT_MS = 30_000;

interface DocumentVerdict {
  /** Identifies the document in keys; null when it may not be cached. */
  id: number | null;
}

/**
 * Whether every field a document can select is classified cacheable. Mutations, subscriptions,
 * introspection and `node(id:)` (any type) never are, nor a document that asks only for
 * `__typename` (nothing to save).
 */
export function isCacheableDocument(schema: GraphQLSchema, document: DocumentNode): boolean {
  const typeInfo = new TypeInfo(schema);
  const queryType = schema.getQueryType();
  const cacheableType = (type: GraphQLNamedType | null | undefined): boolean => {
    if (!type) return false;
    if (isAbstractType(type)) return schema.getPossibleTypes(type).every((t) => OBJECT_TYPE_CACHING[t.name] === true);
    return OBJECT_TYPE_CACHING[type.name] === true;
  };
  let dataFields = 0;
  try {
    visit(
      document,
      visitWithTypeInfo(typeInfo, {
        OperationDefinition(node) {
          if (node.operation !== 'query') throw NOT_CACHEABLE;
        },
        Field(node) {
          const name = node.name.value;
          if (name === '__typename') return;
          if (name.startsWith('__')) throw NOT_CACHEABLE;
          const parent = typeInfo.getParentType();
          if (parent && parent === queryType) {
            if (!CACHEABLE_QUERY_FIELDS.has(name)) throw NOT_CACHEABLE;
            dataFields++;
          } else if (!cacheableType(parent)) {
            throw NOT_CACHEABLE;
          }
        },
      }),
    );
  } catch (err) {
    if (err === NOT_CACHEABLE) return false;
    throw err;
  }
  return dataFields > 0;
}

interface Entry {
  version: string;
  /** The result's data until its JSON exists; then null, so memory is bounded by the JSON. */
  data: ExecutionResult['data'] | null;
  json: string | null;
}

export interface ResponseCacheStats {
  hits: number;
  /** Misses that waited for the same query already running for the same version. */
  coalesced: number;
  misses: number;
  entries: number;
  bytes: number;
}

export interface ResponseCache {
  plugin: Plugin;
  stats(): ResponseCacheStats;
}

export function createResponseCache(opts: { maxEntries: number; maxBytes: number }): ResponseCache {
  const entries = new Map<string, Entry>();
  const verdicts = new WeakMap<DocumentNode, DocumentVerdict>();
  let nextDocumentId = 1;
  let bytes = 0;
  let hits = 0;
  let coalesced = 0;
  let misses = 0;
  // One execution per key and data version at a time. Without it every request that arrives
  // between a write and the first new entry executes the query: under steady writes (sessions
  // reporting progress) that was most requests (page 22% of trivial at 50 writes/s, 88% at none).
  // Waiting for the running execution is as exact as a hit: it started after this request's
  // version was read (or at it), and nothing of the organization has committed since.
  const inflight = new Map<string, Promise<Entry | null>>();
  const settleOnResponse = new WeakMap<object, () => void>();

  // Keys count against the byte bound too: they hold the variables, up to a request body each.
  const drop = (key: string, entry: Entry) => {
    entries.delete(key);
    bytes -= key.length;
    if (entry.json !== null) bytes -= entry.json.length;
  };
  // Map iteration order is insertion order and a hit re-inserts its entry: the first key is the
  // least recently used.
  const evict = () => {
    while (entries.size > opts.maxEntries || bytes > opts.maxBytes) {
      const oldest = entries.keys().next();
      if (oldest.done) return;
      drop(oldest.value, entries.get(oldest.value)!);
    }
  };

  // The response's JSON is made once per entry, by yoga's result processor (it calls a result's
  // own stringify when it has one), and served as it is on every hit. Websocket clients get the
  // result through graphql-ws's JSON.stringify, which reads data: parsed back from the JSON then.
  const resultFor = (key: string, entry: Entry): ExecutionResult => {
    const result = {} as ExecutionResult;
    Object.defineProperty(result, 'data', {
      enumerable: true,
      get: () => (entry.json === null ? entry.data : JSON.parse(entry.json).data),
    });
    Object.defineProperty(result, 'stringify', {
      enumerable: false,
      value: (value: unknown) => {
        if (entry.json !== null) return entry.json;
        const json = JSON.stringify(value);
        if (entries.get(key) === entry) {
          entry.json = json;
          entry.data = null;
          bytes += json.length;
          evict();
        }
        return json;
      },
    });
    return result;
  };

  const verdictFor = (schema: GraphQLSchema, document: DocumentNode): DocumentVerdict => {
    let verdict = verdicts.get(document);
    if (!verdict) {
      verdict = { id: isCacheableDocument(schema, document) ? nextDocumentId++ : null };
      verdicts.set(document, verdict);
    }
    return verdict;
  };

  const plugin: Plugin = {
    onExecute({ args, setResultAndStopExecution }) {
      if (opts.maxEntries === 0) return;
      const verdict = verdictFor(args.schema, args.document);
      if (verdict.id === null) return;
      const ctx = args.contextValue as { principal?: () => Promise<Principal | null> };
      if (typeof ctx.principal !== 'function') return;
      return ctx.principal().then((principal) => {
        if (!principal) return;
        // The caller is part of the key: roles and keys may see different things.
        const key = [
          principal.orgId,
          principal.kind,
          principal.userId ?? principal.apiKeyId,
          principal.role,
          verdict.id,
          args.operationName ?? '',
          JSON.stringify(args.variableValues ?? {}),
        ].join('\u0000');
        const version = principal.dataVersion;
        const found = entries.get(key);
        if (found && found.version === version) {
          hits++;
          entries.delete(key);
          entries.set(key, found);
          setResultAndStopExecution(resultFor(key, found));
          return;
        }
        const flightKey = `${key}\u0000${version}`;
        const running = inflight.get(flightKey);
        if (running) {
          return running.then((entry) => {
            if (entry) {
              coalesced++;
              setResultAndStopExecution(resultFor(key, entry));
              return;
            }
            misses++;
            return undefined;
          });
        }
        misses++;
        let finish!: (entry: Entry | null) => void;
        const flight = new Promise<Entry | null>((resolve) => (finish = resolve));
        inflight.set(flightKey, flight);
        const settle = (entry: Entry | null) => {
          clearTimeout(guard);
          if (inflight.get(flightKey) === flight) inflight.delete(flightKey);
          finish(entry);
        };
        // An execution that throws never reaches onExecuteDone: its HTTP response settles the
        // flight (onResponse below), and a websocket one is given up on after a while.
        const guard = setTimeout(() => settle(null), ABANDONED_FLIGHT_MS);
        guard.unref();
        const request = (args.contextValue as { request?: object }).request;
        if (request) settleOnResponse.set(request, () => settle(null));
        return {
          onExecuteDone({ result, setResult }) {
            const r = result as ExecutionResult;
            // Errors may be passing (a database hiccup); async iterables are not single results.
            if (!r || typeof r !== 'object' || Symbol.asyncIterator in r || r.errors?.length || r.extensions) {
              settle(null);
              return;
            }
            const entry: Entry = { version, data: r.data, json: null };
            const current = entries.get(key);
            // A slow execution must not replace what a later version already stored.
            if (!current || BigInt(current.version) < BigInt(version)) {
              if (current) drop(key, current);
              entries.set(key, entry);
              bytes += key.length;
              evict();
            }
            setResult(resultFor(key, entry));
            settle(entry);
          },
        };
      });
    },
    onResponse({ request }) {
      settleOnResponse.get(request)?.();
    },
  };

  return {
    plugin,
    stats: () => ({ hits, coalesced, misses, entries: entries.size, bytes }),
  };
}
