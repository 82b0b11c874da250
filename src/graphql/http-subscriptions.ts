// Subscriptions run over the websocket only. graphql-yoga also serves them over HTTP (Server-Sent
// Events when a client asks for `Accept: text/event-stream`), but that path has none of the
// websocket's protections: no per-user connection cap, no per-connection subscription cap, no
// closing on revocation or token expiry, and a stream that outlives its aborted client. It is
// undocumented (API.md, the README and GraphiQL all use graphql-transport-ws), so it is refused.
import { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';

export const HTTP_SUBSCRIPTION_REFUSED =
  'Subscriptions are served over the websocket only: connect to ws://<host>/graphql with graphql-transport-ws';

export function useNoSubscriptionsOverHttp(): Plugin {
  return {
    onSubscribe({ args, setResultAndStopExecution }) {
      // The websocket server builds its contexts without a Request; every HTTP request has one.
      if ((args.contextValue as { request?: unknown }).request) {
        setResultAndStopExecution({
          errors: [new GraphQLError(HTTP_SUBSCRIPTION_REFUSED, { extensions: { code: 'BAD_REQUEST' } })],
        });
      }
    },
  };
}
