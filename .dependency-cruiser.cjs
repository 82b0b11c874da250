// Architecture rules, checked by `npm run lint:deps` and by the test command (scripts/test.sh)
// over src/, gpu-node/ and protocol/. Violations that existed when a rule was introduced are
// listed in .dependency-cruiser-known-violations.json (made by `npm run lint:deps:baseline`) and
// only counted; any new one fails. Regenerate that file when a known one is gone, so it cannot
// come back unnoticed.

/** Files of src/ the gpu-node may import besides protocol/ (see `gpu-node-only-protocol`). */
const SHARED_WITH_GPU_NODE = [
  // The logger: a leaf (no imports from src/), so both processes log in the same format.
  '^src/lib/log\\.ts$',
  // The archive entry names the dataset validator ignores (and their byte limit): the node must
  // skip exactly the entries the API skipped when it validated the upload. They belong in a
  // shared library folder; src/modules/datasets/ is being changed elsewhere, so they move later.
  '^src/modules/datasets/validation/(paths|limits)\\.ts$',
];

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment:
        'An import cycle means no module of it can be understood, tested or started on its own, ' +
        'and ES modules in a cycle can see each other half-initialised. Type-only imports count ' +
        '(tsPreCompilationDeps): a type cycle couples the modules just the same.',
      from: { path: '^(src|gpu-node|protocol)/' },
      to: { circular: true },
    },
    {
      name: 'gpu-node-only-protocol',
      severity: 'error',
      comment:
        'The gpu-node runs on GPU machines that have no database, no storage credentials and no ' +
        'API code: it shares only the contracts of protocol/ with the API, plus the leaf files ' +
        'named in SHARED_WITH_GPU_NODE, so a change inside the API cannot break or bloat it.',
      from: { path: '^gpu-node/' },
      to: { path: '^(src|test|bench|scripts|migrations)/', pathNot: SHARED_WITH_GPU_NODE },
    },
    {
      name: 'shared-files-stay-leaves',
      severity: 'error',
      comment:
        'What the gpu-node may import from src/ must not pull the rest of the API in behind it.',
      from: { path: SHARED_WITH_GPU_NODE },
      to: { path: '^src/', pathNot: SHARED_WITH_GPU_NODE },
    },
    {
      name: 'protocol-stands-alone',
      severity: 'error',
      comment:
        'protocol/ is what the API and the gpu-node agree on; it depends on neither, or one side ' +
        'would change the contract by changing its own code.',
      from: { path: '^protocol/' },
      to: { path: '^(src|gpu-node|test|bench|scripts|migrations|trainers)/' },
    },
    {
      name: 'storage-and-providers-not-to-modules',
      severity: 'error',
      comment:
        'Storage backends and provider adapters sit below the domain modules: the modules call ' +
        'them, never the other way round. Reaching into src/modules/* from here ties an adapter ' +
        'to one entity or service and makes cycles through the whole API.',
      from: { path: '^src/(storage|providers)/' },
      to: { path: '^src/modules/' },
    },
    {
      name: 'pothos-only-in-graphql',
      severity: 'error',
      comment:
        'Pothos is how the GraphQL schema is built, and only src/graphql/ uses it directly (the ' +
        'modules\' schema.ts files reach it through src/graphql/builder.ts): services, entities ' +
        'and workers must not depend on the schema builder.',
      from: { path: '^(src|gpu-node|protocol)/', pathNot: '^src/graphql/' },
      to: { path: '^node_modules/@pothos/' },
    },
    {
      name: 'graphql-layer-only-from-schema',
      severity: 'error',
      comment:
        'The intent of the Pothos rule, one step further: services, entities, records and workers ' +
        'do not import src/graphql/ (its per-request context included), so background workers ' +
        'can use the same services. Only the GraphQL layer (each module\'s schema.ts and ' +
        'subscriptions.ts, which are resolvers) and the HTTP server that mounts it may.',
      from: {
        path: '^src/',
        pathNot: ['^src/graphql/', '^src/modules/[^/]+/(schema|subscriptions)\\.ts$', '^src/server\\.ts$'],
      },
      to: { path: '^src/graphql/' },
    },
    {
      name: 'orchestrator-through-its-index',
      severity: 'error',
      comment:
        'The orchestrator answers through src/orchestrator/index.ts (place a session, submit a ' +
        'requeued one, cancel): its profiles, candidates, checks and payloads are internals that ' +
        'strategies, estimates and budgets will reshape, so nothing outside the folder may lean on them.',
      from: { path: '^(src|test|bench|scripts)/', pathNot: '^src/orchestrator/' },
      to: { path: '^src/orchestrator/', pathNot: '^src/orchestrator/index\\.ts$' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment:
        'An import the cruiser cannot resolve is an import the rules above cannot see; it must ' +
        'not pass silently (a typo, or a path the resolution settings below do not cover).',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    // Type-only imports are dependencies too (the no-circular rule says why).
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    moduleSystems: ['es6', 'cjs'],
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
    skipAnalysisNotInRules: true,
  },
};
