// What each provider's profile `config` and `credentials` must hold. Unknown keys are refused so
// a misspelt option fails at creation, not at submission time.
import { z } from 'zod';
import type { Provider } from './entity.js';

const endpoint = z
  .url({ message: 'must be an http(s) URL' })
  .refine((u) => /^https?:\/\//.test(u), 'must be an http(s) URL')
  .optional()
  .describe('A private or VPC endpoint, or a local test double, used instead of the public one');
const image = z.string().min(1).max(512).describe('The trainer container image');
const pricePerHour = z.number().positive().max(10_000).optional().describe('USD per hour, for cost estimates');

export const providerConfigSchemas = {
  PLATFORM: z.strictObject({
    gpus: z.number().int().min(1).max(16).default(1),
    gpuType: z.string().min(1).max(64).optional().describe('Only nodes whose GPU name contains this'),
    allowWaiting: z.boolean().default(true).describe('Queue when every GPU is busy instead of failing over'),
    maxRetries: z.number().int().min(0).max(10).default(0).describe('Times a crashed trainer is started again'),
    timeoutMinutes: z.number().int().min(1).max(60 * 24 * 14).optional().describe('Job time limit'),
    pricePerGpuHourUsd: pricePerHour,
  }),
  SAGEMAKER: z.strictObject({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be an AWS region such as us-east-1'),
    roleArn: z.string().regex(/^arn:aws[\w-]*:iam::\d{12}:role\/.+$/, 'must be an IAM role ARN'),
    instanceType: z.string().regex(/^ml\.[a-z0-9]+\.[a-z0-9]+$/, 'must be a SageMaker instance type such as ml.g5.xlarge'),
    instanceCount: z.number().int().min(1).max(64).default(1),
    image,
    outputS3Uri: z.string().regex(/^s3:\/\/[^/]+/, 'must be an s3:// URI').optional(),
    useSpot: z.boolean().default(false),
    maxRuntimeSeconds: z.number().int().min(60).max(28 * 24 * 3600).default(24 * 3600),
    pricePerHourUsd: pricePerHour,
    endpoint,
  }),
  VERTEX_AI: z.strictObject({
    projectId: z.string().regex(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/, 'must be a GCP project id'),
    region: z.string().regex(/^[a-z]+-[a-z]+\d+$/, 'must be a GCP region such as us-central1'),
    machineType: z.string().min(1).max(64),
    acceleratorType: z.string().regex(/^[A-Z0-9_]+$/, 'must be an accelerator type such as NVIDIA_L4').optional(),
    acceleratorCount: z.number().int().min(0).max(16).default(1),
    image,
    pricePerHourUsd: pricePerHour,
    endpoint,
  }),
  AZURE_ML: z.strictObject({
    subscriptionId: z.uuid({ message: 'must be a subscription id (a UUID)' }),
    resourceGroup: z.string().min(1).max(90),
    workspace: z.string().min(1).max(260),
    computeTarget: z.string().min(1).max(64),
    image: image.optional(),
    pricePerHourUsd: pricePerHour,
    endpoint,
  }),
  KUBERNETES: z.strictObject({
    server: z.url({ message: 'must be the API server URL' }).optional(),
    namespace: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a Kubernetes namespace name').default('default'),
    image,
    gpuResourceName: z.string().min(1).default('nvidia.com/gpu'),
    gpus: z.number().int().min(0).max(16).default(1),
    nodeSelector: z.record(z.string(), z.string()).optional(),
    pricePerHourUsd: pricePerHour,
    endpoint,
  }),
} satisfies Record<Provider, z.ZodType>;

export const providerCredentialSchemas = {
  PLATFORM: null,
  SAGEMAKER: z.strictObject({
    accessKeyId: z.string().regex(/^[A-Z0-9]{16,128}$/, 'must be an AWS access key id'),
    secretAccessKey: z.string().min(16).max(256),
    sessionToken: z.string().min(16).max(4096).optional(),
  }),
  VERTEX_AI: z.strictObject({
    clientEmail: z.email({ message: 'must be the service account email' }),
    privateKey: z.string().includes('PRIVATE KEY', { message: 'must be a PEM private key' }),
    privateKeyId: z.string().optional(),
  }),
  AZURE_ML: z.strictObject({
    tenantId: z.uuid({ message: 'must be a tenant id (a UUID)' }),
    clientId: z.uuid({ message: 'must be a client id (a UUID)' }),
    clientSecret: z.string().min(8).max(1024),
  }),
  KUBERNETES: z.union([
    z.strictObject({ token: z.string().min(8), caCert: z.string().optional() }),
    z.strictObject({ kubeconfig: z.string().min(20) }),
  ]),
} satisfies Record<Provider, z.ZodType | null>;

const mask = (s: string) => (s.length <= 8 ? '…' : `${s.slice(0, 4)}…${s.slice(-4)}`);

/** A hint that tells credentials apart without revealing them; only identifiers, never secrets. */
export function credentialsHint(provider: Provider, credentials: Record<string, unknown>): string {
  switch (provider) {
    case 'SAGEMAKER':
      return `AWS key ${mask(String(credentials.accessKeyId))}`;
    case 'VERTEX_AI':
      return `service account ${String(credentials.clientEmail).replace(/^(.{3}).*(@.*)$/, '$1…$2')}`;
    case 'AZURE_ML':
      return `client ${mask(String(credentials.clientId))}`;
    case 'KUBERNETES':
      return 'kubeconfig' in credentials ? 'kubeconfig' : 'service account token';
    default:
      return 'set';
  }
}
