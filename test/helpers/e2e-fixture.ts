// The setup every end-to-end file shares, in one place: a real API with its workers (its own
// database and Redis prefix, as startTestApi makes for each file), an organization with a READY
// dataset, a temporary folder, and the gpu-nodes and graphql-ws clients a test starts. Whatever is
// started is stopped in afterAll, newest first, even when a test fails.
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { GpuNode } from '../../gpu-node/node.js';
import { startTestApi, type TestApi } from './api.js';
import {
  Cleanup,
  gpuNodes,
  makeDatasetArchive,
  NodeProcess,
  PrivateRedis,
  setupOrg,
  startInProcessNode,
  tempDir,
  WsClient,
  type E2eOrg,
  type GpuNodeView,
} from './e2e.js';

export interface E2eFixtureOptions {
  /** Names the file's temporary folder (cvtrain-e2e-<name>-*). */
  name: string;
  /** API settings on top of startTestApi's; heartbeats every 1000 ms unless set here. */
  env?: Record<string, string>;
  /** The in-process gpu-node ensureNode() starts: its id, and its data folder under root ('node' unless set). */
  node?: { id: string; dir?: string };
  /** Start that node in beforeAll rather than on the first ensureNode(). */
  startNode?: boolean;
  /** API and nodes use a redis-server of the file's own (started first, killed last), for tests that restart it. */
  privateRedis?: boolean;
  /** beforeAll and afterAll timeouts (60 s each unless set). */
  setupTimeoutMs?: number;
  teardownTimeoutMs?: number;
}

export interface E2eFixture {
  readonly cleanup: Cleanup;
  readonly api: TestApi;
  /** An organization with a READY dataset version (24 images, 32 px), a model and a default profile. */
  readonly org: E2eOrg;
  /** The file's temporary folder; the dataset it uploaded is extracted under root/dataset. */
  readonly root: string;
  /** Only with privateRedis. */
  readonly redis: PrivateRedis;
  /** The file's in-process gpu-node, started on the first call; stopped before the API closes. */
  ensureNode(): Promise<GpuNode>;
  /** A graphql-ws client, disposed at the end. */
  client(token: string | null): WsClient;
  /** `npm run gpu-node` as a child process with its data under root/<nodeId>, stopped at the end. */
  nodeProcess(nodeId: string): NodeProcess;
  /** gpuNodes as the organization sees them. */
  gpuNodes(): Promise<GpuNodeView[]>;
}

/** Registers the file's beforeAll and afterAll; the fixture's values exist from beforeAll on. */
export function useE2eFixture(opts: E2eFixtureOptions): E2eFixture {
  const cleanup = new Cleanup();
  let api: TestApi | undefined;
  let org: E2eOrg | undefined;
  let root: string | undefined;
  let redis: PrivateRedis | undefined;
  let node: GpuNode | null = null;
  const started = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`e2e fixture: ${what} is not set up (used before beforeAll?)`);
    return value;
  };

  const fixture: E2eFixture = {
    cleanup,
    get api() {
      return started(api, 'api');
    },
    get org() {
      return started(org, 'org');
    },
    get root() {
      return started(root, 'root');
    },
    get redis() {
      return started(redis, 'redis (privateRedis)');
    },
    async ensureNode() {
      if (!node) {
        if (!opts.node) throw new Error('e2e fixture: no node option, so no in-process node');
        const n = await startInProcessNode(fixture.api, { nodeId: opts.node.id, dataDir: path.join(fixture.root, opts.node.dir ?? 'node') });
        node = n;
        // Before the API closes: the node gives nothing back at the end (no session is running then).
        cleanup.add('gpu-node', () => n.stop());
      }
      return node;
    },
    client(token) {
      const c = new WsClient(fixture.api, token);
      cleanup.add('ws client', () => c.dispose());
      return c;
    },
    nodeProcess(nodeId) {
      const n = new NodeProcess(fixture.api, { nodeId, dataDir: path.join(fixture.root, nodeId) });
      cleanup.add(`gpu-node ${nodeId}`, async () => {
        // A node a test froze (SIGSTOP) cannot handle SIGTERM until it runs again; for one that
        // runs, SIGCONT does nothing.
        if (n.alive) n.child.kill('SIGCONT');
        await n.stop();
      });
      return n;
    },
    gpuNodes: () => gpuNodes(fixture.api, fixture.org.token),
  };

  beforeAll(async () => {
    const env: Record<string, string> = { CVTRAIN_NODE_HEARTBEAT_MS: '1000', ...opts.env };
    if (opts.privateRedis) {
      const r = await PrivateRedis.create();
      redis = r;
      await r.start();
      cleanup.add('redis-server', () => r.kill());
      env.REDIS_URL = r.url;
    }
    const a = await startTestApi({ workers: true, env });
    api = a;
    cleanup.add('api', () => a.close());
    root = tempDir(cleanup, opts.name);
    org = await setupOrg(a, makeDatasetArchive(root, { images: 24, size: 32 }));
    if (opts.startNode) await fixture.ensureNode();
  }, opts.setupTimeoutMs ?? 60_000);

  afterAll(async () => {
    await cleanup.run();
  }, opts.teardownTimeoutMs ?? 60_000);

  return fixture;
}
