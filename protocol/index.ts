// The contracts between processes, imported by both src/ and gpu-node/ (see README).
export * from './redis.js';
export * from './types.js';
export * from './validate.js';
