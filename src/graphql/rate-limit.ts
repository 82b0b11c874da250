// Request rate limits of the whole API: one token bucket per user and per API key over every
// GraphQL request (HTTP) and operation (websocket), and one per client address for requests
// without valid credentials. Refusals: HTTP 429 with Retry-After; over a websocket, a GraphQL
// error with code LIMIT_EXCEEDED. Buckets and settings: src/lib/rate-limit.ts, config.rateLimits.
import type { IncomingMessage } from 'node:http';
import { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { App } from '../app.js';
import { addressBucket, clientAddress, retryAfterSeconds } from '../lib/rate-limit.js';
import type { Principal } from '../modules/orgs/principal.js';

type PrincipalFor = (request: Request) => Promise<Principal | null>;

export function limitExceeded(retryAfterMs: number): GraphQLError {
  const seconds = retryAfterSeconds(retryAfterMs);
  return new GraphQLError(`Too many requests; try again in ${seconds} s`, {
    extensions: { code: 'LIMIT_EXCEEDED', retryAfterSeconds: seconds },
  });
}

export function createRequestRateLimit(app: App, principalFor: PrincipalFor) {
  const limits = app.rateLimits;
  const sockets = new WeakMap<Request, IncomingMessage>();
  const addresses = new WeakMap<Request, string | null>();
  const retryAfter = new WeakMap<Request, number>();
  // HTTP requests already counted in onRequest; their operations are not counted again.
  const counted = new WeakSet<Request>();

  const addressOf = (request: Request): string | null => {
    let address = addresses.get(request);
    if (address === undefined) {
      const req = sockets.get(request);
      address = req ? clientAddress(req, limits.trustProxy) : null;
      addresses.set(request, address);
    }
    return address;
  };

  /** 0: go ahead; otherwise milliseconds until a retry may succeed. */
  const wait = (principal: Principal | null, address: () => string | null): number | Promise<number> => {
    if (principal) {
      return limits.requests ? limits.requests.take(principal.kind === 'user' ? `u:${principal.userId}` : `k:${principal.apiKeyId}`) : 0;
    }
    return limits.anonymous ? limits.anonymous.take(addressBucket(address())) : 0;
  };

  // An operation not counted as an HTTP request: a websocket operation, whose context the socket
  // code builds from connection_init. Its address is the context's clientAddress where the socket
  // code sets one; otherwise anonymous operations share one bucket.
  const limitOperation = (
    contextValue: unknown,
    stop: (result: { errors: GraphQLError[] }) => void,
  ): void | Promise<void> => {
    const ctx = contextValue as { request?: Request; principal?: () => Promise<Principal | null>; clientAddress?: string | null };
    if (!limits.requests && !limits.anonymous) return;
    if ((ctx.request && counted.has(ctx.request)) || typeof ctx.principal !== 'function') return;
    return ctx.principal().then(async (principal) => {
      const ms = await wait(principal, () => ctx.clientAddress ?? null);
      if (ms > 0) stop({ errors: [limitExceeded(ms)] });
    });
  };

  const plugin: Plugin = {
    onRequest({ request, serverContext, endResponse, fetchAPI }) {
      const req = (serverContext as { req?: IncomingMessage } | undefined)?.req;
      if (req) sockets.set(request, req);
      if (!limits.requests && !limits.anonymous) return;
      counted.add(request);
      // Before parsing and execution: a refused request costs its principal lookup (needed by the
      // request anyway) and, now and then, one Redis round trip.
      return principalFor(request).then(
        async (principal) => {
          const ms = await wait(principal, () => addressOf(request));
          if (ms <= 0) return;
          const error = limitExceeded(ms);
          endResponse(
            new fetchAPI.Response(JSON.stringify({ errors: [error.toJSON()] }), {
              status: 429,
              headers: { 'content-type': 'application/json; charset=utf-8', 'retry-after': String(error.extensions.retryAfterSeconds) },
            }),
          );
        },
        // A failed lookup fails the request where it always did (the context); not the limit's call.
        () => undefined,
      );
    },
    onExecute({ args, setResultAndStopExecution }) {
      return limitOperation(args.contextValue, (result) => setResultAndStopExecution(result));
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      return limitOperation(args.contextValue, (result) => setResultAndStopExecution(result));
    },
    onResponse({ request, response }) {
      const seconds = retryAfter.get(request);
      if (seconds !== undefined) response.headers.set('retry-after', String(seconds));
    },
  };

  return {
    plugin,
    /** The client's address of an HTTP request (config CVTRAIN_TRUST_PROXY). */
    clientAddress: addressOf,
    /** Sign-in throttling refused part of the request: the response carries Retry-After. */
    noteRetryAfter(request: Request, seconds: number) {
      retryAfter.set(request, Math.max(seconds, retryAfter.get(request) ?? 0));
    },
  };
}
