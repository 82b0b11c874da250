// The HTTP and websocket server: GraphQL over HTTP and graphql-ws on the same port and path.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { usePersistedOperations } from '@graphql-yoga/plugin-persisted-operations';
import { useGraphQlJit } from '@envelop/graphql-jit';
import { GraphQLError, Kind, type ExecutionArgs } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { createYoga, maskError, type Plugin } from 'graphql-yoga';
import { WebSocketServer } from 'ws';
import { listeningUrl, type App } from './app.js';
import { createRequestContext, type RequestContext } from './graphql/context.js';
import { createLocalStorageHandler } from './storage/local-http.js';
import { loadPersistedOperations } from './graphql/persisted.js';
import { createRequestRateLimit } from './graphql/rate-limit.js';
import { createResponseCache, type ResponseCache } from './graphql/response-cache.js';
import { useSharedSubscriptionExecution } from './graphql/shared-subscriptions.js';
import { schema } from './graphql/schema.js';
import { AppError, ValidationError } from './lib/errors.js';
import { createLogger, errorFields } from './lib/log.js';
import { resolvePrincipal, type Principal } from './modules/orgs/principal.js';
import { createNodeApiHandler, NODE_API_PREFIX } from './modules/nodes/http.js';

const log = createLogger('server');

export const GRAPHQL_PATH = '/graphql';

// Headers a browser cannot attach to a cross-site "simple" request without a CORS preflight;
// a GET or form POST carrying none of them is refused (CSRF prevention).
const PREFLIGHT_HEADERS = ['x-graphql-yoga-csrf', 'authorization', 'graphql-preflight', 'apollo-require-preflight'];

export interface RunningServer {
  url: string;
  port: number;
  httpServer: http.Server;
  responseCache: ResponseCache;
  close(): Promise<void>;
}

export function createGraphQLHandler(app: App) {
  const { config } = app;
  const persisted = loadPersistedOperations();
  // The principal is needed twice per request (the persisted-operations gate and the resolvers);
  // memoising per Request object keeps that to one lookup.
  const principals = new WeakMap<Request, Promise<Principal | null>>();
  const principalFor = (request: Request) => {
    let p = principals.get(request);
    if (!p) {
      p = resolvePrincipal(app, request.headers.get('authorization'));
      principals.set(request, p);
    }
    return p;
  };

  const responseCache = createResponseCache(config.responseCache);
  // Rate limits (src/graphql/rate-limit.ts): before everything, cache hits included.
  const rateLimit = createRequestRateLimit(app, principalFor);
  const plugins: Plugin[] = [
    rateLimit.plugin,
    // Before the rest: a hit skips every later plugin's execution work.
    responseCache.plugin,
    // Compiles each distinct query once into straight-line JS; executing a 50-row page through
    // graphql-js's generic executor cost more than its SQL. Subscriptions keep the reference executor.
    useGraphQlJit({}, {
      enableIf: (args) =>
        !args.document.definitions.some((d) => d.kind === Kind.OPERATION_DEFINITION && d.operation === 'subscription'),
    }) as Plugin,
    useCSRFPrevention({ requestHeaders: PREFLIGHT_HEADERS }),
    useRedactRejectedVariables(),
    maxDepthPlugin({ n: config.maxDepth, ignoreIntrospection: true, exposeLimits: true }) as Plugin,
    maxAliasesPlugin({ n: config.maxAliases, exposeLimits: true }) as Plugin,
    usePersistedOperations({
      getPersistedOperation: (hash) => persisted.get(hash) ?? null,
      // Keys marked persisted-only run nothing but the manifest's operations.
      allowArbitraryOperations: async (request) => !(await principalFor(request))?.persistedOnly,
      skipDocumentValidation: false,
    }),
    // Last, so that its subscribe function is the one used.
    useSharedSubscriptionExecution(),
  ];

  const yoga = createYoga<Record<string, unknown>, RequestContext>({
    schema,
    graphqlEndpoint: GRAPHQL_PATH,
    landingPage: false,
    graphiql: config.graphiql ? { title: 'cvtrain GraphQL API', subscriptionsProtocol: 'WS' } : false,
    // Unexpected errors reach clients as "Unexpected error." outside development; typed errors
    // are results, not errors, so masking never hides them.
    maskedErrors: { isDev: config.env === 'development', maskError: exposeExpectedErrors },
    logging: {
      debug: (...args) => log.debug(String(args[0])),
      info: (...args) => log.info(String(args[0])),
      warn: (...args) => log.warn(String(args[0])),
      error: (...args) => log.error(String(args[0]), args[1] ? errorFields(args[1]) : undefined),
    },
    plugins,
    // The HTTP handler in startServer refuses a body without a Content-Length or over
    // CVTRAIN_MAX_BODY_BYTES before yoga sees it, so yoga's limit, which pipes every request body
    // through a counting TransformStream (about 15% of a small request's CPU here: the stream, its
    // pipeline and the AbortSignal/DOMException it makes when it ends), only repeated it.
    maxRequestBodySize: false,
    // Websocket operations arrive without a Request: their context is built in onSubscribe below.
    context: ({ request }) =>
      request
        ? createRequestContext(app, {
            authorization: request.headers.get('authorization'),
            principal: principalFor(request),
            clientAddress: rateLimit.clientAddress(request),
            noteRetryAfter: (seconds) => rateLimit.noteRetryAfter(request, seconds),
          })
        : ({} as RequestContext),
  });
  return { yoga, persisted, responseCache };
}

export async function startServer(app: App, opts: { port?: number; host?: string } = {}): Promise<RunningServer> {
  const { config } = app;
  const { yoga, persisted, responseCache } = createGraphQLHandler(app);

  const local = app.storage.local;
  const storageHandler = local ? createLocalStorageHandler(local, { maxUploadBytes: config.storage.maxUploadBytes }) : null;

  const nodeApi = createNodeApiHandler(app);

  const httpServer = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    // Local storage links (/storage/...): streamed both ways, with an idle timeout of their own.
    if (storageHandler?.(req, res)) return;
    // Slow-loris protection: every other request must arrive whole within 30 s. Enforced here
    // rather than by server.requestTimeout, which would also cut off long storage uploads.
    const slow = setTimeout(() => {
      if (req.complete) return;
      if (res.headersSent) return void req.socket.destroy();
      // Let the 408 reach the client, then drop the connection whatever it is still sending.
      res.once('finish', () => req.socket.destroy());
      res.writeHead(408, { connection: 'close' }).end();
    }, 30_000);
    res.once('close', () => clearTimeout(slow));
    // The gpu-node API (/node/v1/...): join-token authenticated JSON, small bodies.
    if (url.startsWith(NODE_API_PREFIX)) {
      void nodeApi(req, res);
      return;
    }
    const length = req.headers['content-length'];
    // Bodies must declare their length so an oversized one is refused before it is read (Node's
    // parser has already refused a malformed Content-Length, or one sent with Transfer-Encoding).
    // This is the API's only body limit: yoga's own (maxRequestBodySize below) is off.
    if (req.method === 'POST' || length !== undefined || req.headers['transfer-encoding'] !== undefined) {
      if (length === undefined) {
        return refuse(res, 411, 'Send a Content-Length header with the request body');
      }
      if (Number(length) > config.maxBodyBytes) {
        return refuse(res, 413, `Request body exceeds ${config.maxBodyBytes} bytes`);
      }
    }
    void yoga(req, res);
  });
  // Whole-request timeout is per request above (storage uploads are exempt); headers still must
  // arrive within headersTimeout.
  httpServer.requestTimeout = 0;
  httpServer.headersTimeout = 10_000;
  httpServer.keepAliveTimeout = 5_000;

  const wsServer = new WebSocketServer({ server: httpServer, path: GRAPHQL_PATH, maxPayload: config.maxBodyBytes });
  const wsCleanup = useServer<{ authorization?: string }, { ctx?: RequestContext }>(
    {
      execute: (args: ExecutionArgs) => (args.rootValue as { execute: typeof import('graphql').execute }).execute(args),
      subscribe: (args: ExecutionArgs) =>
        (args.rootValue as { subscribe: typeof import('graphql').subscribe }).subscribe(args),
      onSubscribe: async (wsCtx, _id, payload) => {
        const authorization =
          typeof wsCtx.connectionParams?.authorization === 'string' ? wsCtx.connectionParams.authorization : null;
        const reqCtx = createRequestContext(app, { authorization });
        const principal = await reqCtx.principal();
        const persistedHash = (payload.extensions as { persistedQuery?: { sha256Hash?: string } } | undefined)
          ?.persistedQuery?.sha256Hash;
        let query = payload.query;
        if (persistedHash) {
          query = persisted.get(persistedHash) ?? '';
          if (!query) return [new GraphQLError('PersistedQueryNotFound')];
        } else if (principal?.persistedOnly) {
          return [new GraphQLError('This API key may only run persisted operations')];
        }
        const enveloped = yoga.getEnveloped({ ...reqCtx, params: payload, request: undefined });
        let document;
        try {
          document = enveloped.parse(query);
        } catch (err) {
          return [err instanceof GraphQLError ? err : new GraphQLError(String(err))];
        }
        const errors = enveloped.validate(enveloped.schema, document);
        if (errors.length) return errors;
        const contextValue = await enveloped.contextFactory();
        return {
          schema: enveloped.schema,
          document,
          operationName: payload.operationName,
          variableValues: payload.variables,
          contextValue: Object.assign(contextValue, reqCtx),
          rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
        };
      },
    },
    wsServer,
  );

  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(opts.port ?? config.port, opts.host ?? config.host, () => resolve());
  });
  const port = (httpServer.address() as AddressInfo).port;
  const host = opts.host ?? config.host;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}${GRAPHQL_PATH}`;
  // Links point at the port actually bound (port 0 in tests) unless CVTRAIN_PUBLIC_URL fixes them.
  if (local && !config.storage.publicUrl) local.setPublicUrl(listeningUrl(host, port));
  log.info('GraphQL API listening', { url, graphiql: config.graphiql });

  return {
    url,
    port,
    httpServer,
    responseCache,
    async close() {
      await wsCleanup.dispose();
      for (const client of wsServer.clients) client.terminate();
      wsServer.close();
      httpServer.closeIdleConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    },
  };
}

// Expected failures thrown where no typed result exists (a query that needs a signed-in caller)
// reach the client with their message and a code; everything else is masked.
const errorCodes: Record<string, string> = {
  AuthenticationError: 'UNAUTHENTICATED',
  ForbiddenError: 'FORBIDDEN',
  ValidationError: 'BAD_USER_INPUT',
  NotFoundError: 'NOT_FOUND',
  LimitExceededError: 'LIMIT_EXCEEDED',
  ConflictError: 'CONFLICT',
};

function exposeExpectedErrors(error: unknown, message: string, isDev?: boolean): Error {
  const original = error instanceof GraphQLError ? error.originalError : error;
  if (original instanceof AppError) {
    const gqlError = error instanceof GraphQLError ? error : null;
    const extensions: Record<string, unknown> = { code: errorCodes[original.name] ?? 'BAD_REQUEST' };
    if (original instanceof ValidationError) extensions.field = original.field;
    return new GraphQLError(original.message, {
      nodes: gqlError?.nodes,
      path: gqlError?.path,
      extensions,
    });
  }
  return maskError(error, message, isDev);
}

/**
 * graphql-js quotes a rejected variable's value in its error ("got invalid value \"...\""). A
 * secret typed into the wrong field (a password where an email goes) would come back in the
 * response, so the quoted value is cut out; the path and the reason stay.
 */
function useRedactRejectedVariables(): Plugin {
  // Keeps the variable, the path and the reason (field and type names); drops the quoted values.
  const redact = (message: string) => {
    const [head, ...reasons] = message.split('; ');
    const variable = /^Variable "\$[^"]+"/.exec(head)?.[0] ?? 'A variable';
    const at = / at "[^"]+"/.exec(head)?.[0] ?? '';
    const reason = reasons
      .join('; ')
      .replace(/(value)\s*:.*$/s, '$1')
      .replace(/, found .*$/s, '');
    return `${variable} got invalid value${at}${reason ? `; ${reason}` : ''}`;
  };
  const fix = (result: { errors?: readonly GraphQLError[] }) =>
    result.errors?.some((e) => e.message.includes('got invalid value'))
      ? {
          ...result,
          errors: result.errors.map((e) =>
            e.message.includes('got invalid value')
              ? new GraphQLError(redact(e.message), { nodes: e.nodes, path: e.path, extensions: e.extensions })
              : e,
          ),
        }
      : null;
  return {
    onExecute: () => ({
      onExecuteDone: ({ result, setResult }) => {
        if (result && typeof result === 'object' && !(Symbol.asyncIterator in result)) {
          const fixed = fix(result as { errors?: readonly GraphQLError[] });
          if (fixed) setResult(fixed as never);
        }
      },
    }),
  };
}

function refuse(res: http.ServerResponse, status: number, message: string) {
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
  res.end(JSON.stringify({ errors: [{ message }] }));
}
