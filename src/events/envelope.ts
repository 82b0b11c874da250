// The event envelope (schema/event-envelope.schema.json) as TypeScript, written once for both ends
// of the stream: the gpu-node fills it with its own typed events, the API's ingester reads any
// event the schema accepts.

/** A file the node uploaded for the event it travels with (checkpoints, artifacts). */
export interface UploadRef {
  key: string;
  sha256: string;
  sizeBytes: number;
}

export interface Envelope<E = { type: string; ts: string; [key: string]: unknown }> {
  v: 1;
  nodeId: string;
  sessionId: string;
  attempt: number;
  seq: number;
  source: 'trainer' | 'node';
  event: E;
  upload?: UploadRef;
}
