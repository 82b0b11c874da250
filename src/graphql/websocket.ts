// GraphQL over websockets (graphql-transport-ws, graphql-ws over `ws`) on the HTTP server's port
// and path. Operations run through yoga's envelop, so they get the same plugins as over HTTP.
//
// A socket lives far longer than the credentials it was opened with, so the credentials are
// checked once at connection_init (close 4401 when missing or invalid) and the connection is then
// kept in a registry by who holds it: revoking an API key or removing a member (a signal through
// Redis pub/sub, so every replica hears it) and a session token's expiry (a timer) close that
// holder's sockets at once, which ends their subscriptions. A periodic sweep re-checks every
// credential in case a signal was lost. Caps bound what one holder may keep open.
import type http from 'node:http';
import { GraphQLError, type ExecutionArgs } from 'graphql';
import { CloseCode } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import type { YogaServerInstance } from 'graphql-yoga';
import { decodeJwt } from 'jose';
import WebSocket, { WebSocketServer } from 'ws';
import type { App } from '../app.js';
import type { RevokedCredential } from '../events/publisher.js';
import { createLogger } from '../lib/log.js';
import { parseApiKey } from '../modules/orgs/credentials.js';
import { bearerToken, resolvePrincipal, type Principal } from '../modules/orgs/principal.js';
import { createRequestContext, type RequestContext } from './context.js';
import { clientAddress } from '../lib/rate-limit.js';

const log = createLogger('websocket');

// A client that never answers our close frame would otherwise keep its subscriptions running for
// ws's 30 s closing handshake timeout (nothing more is sent to it meanwhile).
const CLOSE_GRACE_MS = 1000;
// setTimeout's longest delay; a session token may live 90 days.
const MAX_TIMER_MS = 2 ** 31 - 1;
// How long startup waits for the revocation channel before serving anyway (Redis unreachable).
const REVOCATIONS_READY_MS = 5000;

/** Closes a socket now, and drops it if the client does not complete the close handshake. */
function shut(socket: WebSocket, code: number, reason: string): void {
  if (socket.readyState === WebSocket.OPEN) socket.close(code, reason);
  setTimeout(() => socket.terminate(), CLOSE_GRACE_MS).unref();
}

interface Connection {
  socket: WebSocket;
  authorization: string;
  principal: Principal;
  /** "user:<id>" or "key:<id>": what the connection caps count by. */
  holder: string;
  expiry: NodeJS.Timeout | null;
}

/** The acknowledged connections of this process, by holder. */
class Connections {
  private readonly byHolder = new Map<string, Set<Connection>>();

  count(holder: string): number {
    return this.byHolder.get(holder)?.size ?? 0;
  }

  of(holder: string): Connection[] {
    return [...(this.byHolder.get(holder) ?? [])];
  }

  all(): Connection[] {
    return [...this.byHolder.values()].flatMap((set) => [...set]);
  }

  add(c: Connection): void {
    let set = this.byHolder.get(c.holder);
    if (!set) this.byHolder.set(c.holder, (set = new Set()));
    set.add(c);
  }

  delete(c: Connection): void {
    if (c.expiry) clearTimeout(c.expiry);
    const set = this.byHolder.get(c.holder);
    if (!set) return;
    set.delete(c);
    if (set.size === 0) this.byHolder.delete(c.holder);
  }
}

// Each websocket operation's context, and what aborts its signal (RequestContext.signal).
const operationEnds = new WeakMap<object, AbortController>();

/**
 * graphql-ws calls return() when the client completes an operation or its socket closes; the
 * abort reaches the live stream, which ends at once even while it waits for its next message.
 */
function abortOnReturn<T>(source: AsyncIterator<T> & AsyncIterable<T>, controller: AbortController): AsyncIterableIterator<T> {
  const iterator: AsyncIterableIterator<T> = {
    next: () => source.next(),
    return: (value?: unknown) => {
      controller.abort();
      return source.return ? source.return(value) : Promise.resolve({ value: undefined, done: true });
    },
    throw: (error?: unknown) => {
      controller.abort();
      return source.throw ? source.throw(error) : Promise.reject(error);
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return iterator;
}

/** When a session token stops being valid (ms), or null for API keys and unreadable tokens. */
function tokenExpiry(authorization: string): number | null {
  const token = bearerToken(authorization);
  if (!token || parseApiKey(token)) return null;
  try {
    const { exp } = decodeJwt(token);
    return typeof exp === 'number' ? exp * 1000 : null;
  } catch {
    return null;
  }
}

export interface WebsocketServer {
  wsServer: WebSocketServer;
  /** Resolves once revocation signals are received (or after REVOCATIONS_READY_MS without Redis). */
  ready: Promise<void>;
  close(): Promise<void>;
}

export function startWebsocketServer(
  app: App,
  opts: {
    httpServer: http.Server;
    path: string;
    yoga: YogaServerInstance<Record<string, unknown>, RequestContext>;
    persisted: Map<string, string>;
  },
): WebsocketServer {
  const { config } = app;
  const { yoga, persisted } = opts;
  const limits = config.ws;
  const wsServer = new WebSocketServer({ server: opts.httpServer, path: opts.path, maxPayload: config.maxBodyBytes });
  const connections = new Connections();

  const expireAt = (c: Connection, expMs: number) => {
    const left = expMs - Date.now();
    if (left <= 0) return shut(c.socket, CloseCode.Unauthorized, 'Session token expired; sign in again');
    c.expiry = setTimeout(() => expireAt(c, expMs), Math.min(left, MAX_TIMER_MS));
    c.expiry.unref();
  };

  const revoke = (revoked: RevokedCredential) => {
    if ('apiKeyId' in revoked) {
      for (const c of connections.of(`key:${revoked.apiKeyId}`)) shut(c.socket, CloseCode.Unauthorized, 'API key revoked');
    } else {
      for (const c of connections.of(`user:${revoked.userId}`)) {
        if (c.principal.orgId === revoked.orgId) shut(c.socket, CloseCode.Forbidden, 'No longer a member of this organization');
      }
    }
  };
  const revocations = app.topics.subscribe<RevokedCredential>(app.redisNames.credentialsTopic).then(
    (sub) => {
      void (async () => {
        try {
          for await (const revoked of sub) revoke(revoked);
        } catch (err) {
          log.error('revocation signals stopped; open connections are re-checked by the sweep only', { error: String(err) });
        }
      })();
      return sub;
    },
    (err) => {
      log.error('cannot receive revocation signals; open connections are re-checked by the sweep only', { error: String(err) });
      return null;
    },
  );
  const ready = Promise.race([
    revocations.then(() => undefined),
    new Promise<void>((resolve) => setTimeout(resolve, REVOCATIONS_READY_MS).unref()),
  ]);

  // The safety net under the signals: each distinct credential of an open connection is checked
  // again every CVTRAIN_SUBSCRIPTION_REAUTH_MS (one indexed query per credential, not per socket).
  let sweeping = false;
  const sweep = setInterval(async () => {
    if (sweeping) return;
    sweeping = true;
    try {
      const byCredential = new Map<string, Connection[]>();
      for (const c of connections.all()) {
        const list = byCredential.get(c.authorization);
        if (list) list.push(c);
        else byCredential.set(c.authorization, [c]);
      }
      for (const [authorization, list] of byCredential) {
        const now = await resolvePrincipal(app, authorization).catch(() => undefined);
        if (now === undefined) continue; // the database did not answer: keep them until it does
        for (const c of list) {
          if (!now || now.orgId !== c.principal.orgId) shut(c.socket, CloseCode.Unauthorized, 'Credentials no longer valid');
        }
      }
    } finally {
      sweeping = false;
    }
  }, config.subscriptionReauthMs);
  sweep.unref();

  const wsCleanup = useServer<{ authorization?: string }, { ctx?: RequestContext }>(
    {
      connectionInitWaitTimeout: limits.initTimeoutMs,
      onConnect: async (wsCtx) => {
        const { socket } = wsCtx.extra;
        const authorization =
          typeof wsCtx.connectionParams?.authorization === 'string' ? wsCtx.connectionParams.authorization : null;
        const principal = authorization ? await resolvePrincipal(app, authorization) : null;
        // The client may have gone while its credentials were checked.
        if (socket.readyState !== WebSocket.OPEN) return false;
        if (!authorization || !principal) {
          shut(
            socket,
            CloseCode.Unauthorized,
            authorization
              ? 'Unauthorized: invalid, expired or revoked credentials'
              : 'Unauthorized: send { "authorization": "Bearer ..." } in connection_init',
          );
          return false;
        }
        const [holder, max, per] =
          principal.kind === 'apiKey'
            ? [`key:${principal.apiKeyId}`, limits.maxConnectionsPerApiKey, 'API key']
            : [`user:${principal.userId}`, limits.maxConnectionsPerUser, 'user'];
        if (connections.count(holder) >= max) {
          shut(socket, CloseCode.TooManyInitialisationRequests, `Too many connections: at most ${max} open per ${per}`);
          return false;
        }
        const c: Connection = { socket, authorization, principal, holder, expiry: null };
        connections.add(c);
        socket.once('close', () => connections.delete(c));
        const expMs = principal.kind === 'user' ? tokenExpiry(authorization) : null;
        if (expMs !== null) expireAt(c, expMs);
        return true;
      },
      execute: (args: ExecutionArgs) => (args.rootValue as { execute: typeof import('graphql').execute }).execute(args),
      subscribe: async (args: ExecutionArgs) => {
        const result = await (args.rootValue as { subscribe: typeof import('graphql').subscribe }).subscribe(args);
        const controller = operationEnds.get(args.contextValue as object);
        return controller && Symbol.asyncIterator in result ? abortOnReturn(result, controller) : result;
      },
      onSubscribe: async (wsCtx, _id, payload) => {
        // graphql-ws records every operation in ctx.subscriptions (this one included) from the
        // moment its message arrives until it ends, so this also counts operations still starting.
        if (Object.keys(wsCtx.subscriptions).length > limits.maxSubscriptionsPerConnection) {
          return [
            new GraphQLError(
              `Too many operations on this connection: at most ${limits.maxSubscriptionsPerConnection} at once; complete one first`,
              { extensions: { code: 'LIMIT_EXCEEDED', limit: 'CVTRAIN_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION', maximum: limits.maxSubscriptionsPerConnection } },
            ),
          ];
        }
        const authorization =
          typeof wsCtx.connectionParams?.authorization === 'string' ? wsCtx.connectionParams.authorization : null;
        // The address of the upgrade request: rate limits and sign-in throttling over the socket
        // count against the same per-address buckets as HTTP.
        const reqCtx = createRequestContext(app, {
          authorization,
          clientAddress: clientAddress(wsCtx.extra.request, app.rateLimits.trustProxy),
        });
        const ended = new AbortController();
        reqCtx.signal = ended.signal;
        const principal = await reqCtx.principal();
        if (!principal) {
          // Valid at connection_init, not any more (its revocation signal may still be on its way).
          shut(wsCtx.extra.socket, CloseCode.Unauthorized, 'Credentials no longer valid');
          return [new GraphQLError('Your credentials are no longer valid; sign in again', { extensions: { code: 'UNAUTHENTICATED' } })];
        }
        const persistedHash = (payload.extensions as { persistedQuery?: { sha256Hash?: string } } | undefined)
          ?.persistedQuery?.sha256Hash;
        let query = payload.query;
        if (persistedHash) {
          query = persisted.get(persistedHash) ?? '';
          if (!query) return [new GraphQLError('PersistedQueryNotFound')];
        } else if (principal.persistedOnly) {
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
        const contextValue = Object.assign(await enveloped.contextFactory(), reqCtx);
        operationEnds.set(contextValue, ended);
        return {
          schema: enveloped.schema,
          document,
          operationName: payload.operationName,
          variableValues: payload.variables,
          contextValue,
          rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
        };
      },
    },
    wsServer,
  );

  return {
    wsServer,
    ready,
    async close() {
      clearInterval(sweep);
      await (await revocations)?.return();
      await wsCleanup.dispose();
      for (const client of wsServer.clients) client.terminate();
      wsServer.close();
    },
  };
}
