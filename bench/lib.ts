// What the benchmarks share: a free loopback port (the tests' helper) and a GraphQL call that
// throws on any error, for seeding.
export { freePort } from '../test/helpers/processes.js';

export async function gql(url: string, query: string, variables: object = {}, token?: string) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data: any; errors?: unknown };
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}
