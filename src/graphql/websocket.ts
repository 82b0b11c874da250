// GraphQL over websockets (graphql-transport-ws, graphql-ws over `ws`) on the HTTP server's port
// and path. Operations run through yoga's envelop, so they get the same plugins as over HTTP.
import type http from 'node:http';
import { GraphQLError, type ExecutionArgs } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { YogaServerInstance } from 'graphql-yoga';
import { WebSocketServer } from 'ws';
import type { App } from '../app.js';
import { createRequestContext, type RequestContext } from './context.js';

export interface WebsocketServer {
  wsServer: WebSocketServer;
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
  const wsServer = new WebSocketServer({ server: opts.httpServer, path: opts.path, maxPayload: config.maxBodyBytes });
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

  return {
    wsServer,
    async close() {
      await wsCleanup.dispose();
      for (const client of wsServer.clients) client.terminate();
      wsServer.close();
    },
  };
}
