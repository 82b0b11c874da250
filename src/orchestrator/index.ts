// The orchestrator's public surface. Callers ask one question per job (`place` a new session,
// `submitQueued` a requeued one, `cancelAtProvider`); profiles, candidates, checks and payloads
// stay behind it, with room for strategies, estimates, a catalog and budgets.
export { Orchestrator, type Placement, type PlacementRefusal, type PlacementRequest, type SessionPublisher } from './orchestrator.js';
export { datasetForJob } from './payload.js';
