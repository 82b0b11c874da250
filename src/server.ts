// The HTTP and websocket server: GraphQL over HTTP and graphql-ws on the same port and path.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { usePersistedOperations } from '@graphql-yoga/plugin-persisted-operations';
import { useGraphQlJit } from '@envelop/graphql-jit';
import { GraphQLError, Kind } from 'graphql';
import { createYoga, maskError, type Plugin } from 'graphql-yoga';
import { listeningUrl, type App } from './app.js';
import { createRequestContext, type RequestContext } from './graphql/context.js';
import { createLocalStorageHandler } from './storage/local-http.js';
import { loadPersistedOperations } from './graphql/persisted.js';
import { createRequestRateLimit } from './graphql/rate-limit.js';
import { createResponseCache, type ResponseCache } from './graphql/response-cache.js';
import { isClientError, logFieldsFor, logMessageFor, sanitizedOriginal, useRedactVariables } from './graphql/error-hygiene.js';
import { createDocumentLimits } from './graphql/limits.js';
import { useSharedSubscriptionExecution } from './graphql/shared-subscriptions.js';
import { useNoSubscriptionsOverHttp } from './graphql/http-subscriptions.js';
import { useGraphQLJsVariableErrors } from './graphql/variable-errors.js';
import { startWebsocketServer } from './graphql/websocket.js';
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
  const limits = config.requestLimits.enabled ? createDocumentLimits(config.requestLimits) : null;
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
    useNoSubscriptionsOverHttp(),
    // --- request limits and error hygiene (issue 12) ---
    // Tokens, nesting and the variables' nesting before parsing; anonymous introspection.
    ...(limits ? [limits.plugin as Plugin] : []),
    // Rewrites graphql-jit's variable errors (which name the wrong variable) before they are redacted.
    useGraphQLJsVariableErrors(),
    useRedactVariables(),
    maxDepthPlugin({ n: config.maxDepth, ignoreIntrospection: true, exposeLimits: true }) as Plugin,
    // graphql-armor exempts __typename by default: 55,000 `a1: __typename` aliases cost ~2 s of CPU.
    maxAliasesPlugin({ n: config.maxAliases, exposeLimits: true, allowList: [] }) as Plugin,
    // --- end of issue 12's block ---
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
      // Yoga logs every error it masks or rewrites, a client's mistakes included: those go to debug
      // (any client could otherwise write ERROR lines at will), and no line carries a database
      // error's SQL or values.
      error: (...args) => {
        const err = args[0];
        if (err instanceof Error) {
          if (isClientError(err)) log.debug('request refused', { error: logMessageFor(err) });
          else log.error(logMessageFor(err), logFieldsFor(err));
        } else log.error(String(err), args[1] ? errorFields(args[1]) : undefined);
      },
    },
    plugins,
    // One operation per request: a batch of 10 would multiply every limit by 10.
    batching: false,
    // Bounded in bytes; parse errors are not kept (each held its source). See src/graphql/limits.ts.
    ...(limits ? { parserAndValidationCache: { documentCache: limits.documentCache, errorCache: limits.errorCache } } : {}),
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

  const websocket = startWebsocketServer(app, { httpServer, path: GRAPHQL_PATH, yoga, persisted });
  await websocket.ready;

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
      await websocket.close();
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
  const gqlError = error instanceof GraphQLError ? error : null;
  if (original instanceof AppError) {
    const extensions: Record<string, unknown> = { code: errorCodes[original.name] ?? 'BAD_REQUEST' };
    if (original instanceof ValidationError) extensions.field = original.field;
    // The GraphQLError's message, which variable redaction may have rewritten, not the original's.
    return new GraphQLError(gqlError?.message ?? original.message, {
      nodes: gqlError?.nodes,
      path: gqlError?.path,
      extensions,
    });
  }
  const masked = maskError(error, message, false);
  if (masked === error || !isDev) return masked;
  // Development shows what failed and where, never what yoga would copy from the original error:
  // a database error's message is its SQL with the parameter values (ciphertext included).
  const dev = masked as GraphQLError;
  return new GraphQLError(dev.message, {
    nodes: dev.nodes,
    path: dev.path,
    extensions: { ...dev.extensions, originalError: sanitizedOriginal(original ?? error) },
  });
}

function refuse(res: http.ServerResponse, status: number, message: string) {
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
  res.end(JSON.stringify({ errors: [{ message }] }));
}
