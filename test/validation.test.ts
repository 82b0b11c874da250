// Input validation: every mutation with input refuses bad values with a ValidationError whose
// `field` is the exact input path, before anything is written (a fingerprint of every table is
// compared before and after). Also duplicate names and moves the state does not allow
// (ConflictError), and the one default compute profile per organization.
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { createDatasetVersion, datasetArchive, uploadDatasetVersion } from './helpers/seed.js';

let api: TestApi;
let owner: SignedUp;

const R = `__typename ... on Error { message } ... on ValidationError { field }`;

/** One mutation call: the field, its document and variables. */
interface Call {
  field: string;
  query: string;
  variables: Record<string, unknown>;
}

const call = {
  signUp: (input: object): Call => ({ field: 'signUp', query: `mutation($input: SignUpInput!) { signUp(input: $input) { ${R} } }`, variables: { input } }),
  signIn: (input: object): Call => ({ field: 'signIn', query: `mutation($input: SignInInput!) { signIn(input: $input) { ${R} } }`, variables: { input } }),
  createApiKey: (input: object): Call => ({
    field: 'createApiKey',
    query: `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { ${R} } }`,
    variables: { input },
  }),
  revokeApiKey: (id: string): Call => ({ field: 'revokeApiKey', query: `mutation($id: ID!) { revokeApiKey(id: $id) { ${R} } }`, variables: { id } }),
  addMember: (input: object): Call => ({ field: 'addMember', query: `mutation($input: AddMemberInput!) { addMember(input: $input) { ${R} } }`, variables: { input } }),
  removeMember: (userId: string): Call => ({
    field: 'removeMember',
    query: `mutation($id: ID!) { removeMember(userId: $id) { ${R} } }`,
    variables: { id: userId },
  }),
  createModel: (input: object): Call => ({
    field: 'createModel',
    query: `mutation($input: CreateModelInput!) { createModel(input: $input) { ${R} ... on CreateModelSuccess { model { id } } } }`,
    variables: { input: { name: `model ${randomUUID().slice(0, 8)}`, task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn', ...input } },
  }),
  updateModel: (id: string, input: object): Call => ({
    field: 'updateModel',
    query: `mutation($id: ID!, $input: UpdateModelInput!) { updateModel(id: $id, input: $input) { ${R} } }`,
    variables: { id, input },
  }),
  archiveModel: (id: string): Call => ({ field: 'archiveModel', query: `mutation($id: ID!) { archiveModel(id: $id) { ${R} } }`, variables: { id } }),
  unarchiveModel: (id: string): Call => ({ field: 'unarchiveModel', query: `mutation($id: ID!) { unarchiveModel(id: $id) { ${R} } }`, variables: { id } }),
  createDataset: (input: object): Call => ({
    field: 'createDataset',
    query: `mutation($input: CreateDatasetInput!) { createDataset(input: $input) { ${R} ... on CreateDatasetSuccess { dataset { id } } } }`,
    variables: { input: { name: `data ${randomUUID().slice(0, 8)}`, task: 'OBJECT_DETECTION', ...input } },
  }),
  createComputeProfile: (input: object): Call => ({
    field: 'createComputeProfile',
    query: `mutation($input: CreateComputeProfileInput!) { createComputeProfile(input: $input) {
      ${R} ... on CreateComputeProfileSuccess { computeProfile { id isDefault } } } }`,
    variables: { input: { name: `profile ${randomUUID().slice(0, 8)}`, provider: 'PLATFORM', strategy: 'QUEUE', ...input } },
  }),
  updateComputeProfile: (id: string, input: object): Call => ({
    field: 'updateComputeProfile',
    query: `mutation($id: ID!, $input: UpdateComputeProfileInput!) { updateComputeProfile(id: $id, input: $input) {
      ${R} ... on UpdateComputeProfileSuccess { computeProfile { id isDefault } } } }`,
    variables: { id, input },
  }),
  deleteComputeProfile: (id: string): Call => ({
    field: 'deleteComputeProfile',
    query: `mutation($id: ID!) { deleteComputeProfile(id: $id) { ${R} } }`,
    variables: { id },
  }),
  trainModel: (modelId: string, input: { datasetVersionId?: string; computeProfileId?: string; config?: object }): Call => ({
    field: 'trainModel',
    query: `mutation($modelId: ID!, $input: TrainModelInput!) { trainModel(modelId: $modelId, input: $input) { ${R} } }`,
    variables: { modelId, input: { datasetVersionId: fx.readyVersion, ...input, config: { epochs: 10, ...input.config } } },
  }),
  cancelTrainingSession: (id: string): Call => ({
    field: 'cancelTrainingSession',
    query: `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${R} } }`,
    variables: { id },
  }),
  resumeTrainingSession: (id: string): Call => ({
    field: 'resumeTrainingSession',
    query: `mutation($id: ID!) { resumeTrainingSession(id: $id) { ${R} } }`,
    variables: { id },
  }),
  createDatasetVersion: (input: object): Call => ({
    field: 'createDatasetVersion',
    query: `mutation($input: CreateDatasetVersionInput!) { createDatasetVersion(input: $input) {
      ${R} ... on CreateDatasetVersionSuccess { datasetVersionUpload { version { id } } } } }`,
    variables: { input: { datasetId: fx.detectionDataset, format: 'YOLO', filename: 'shapes.tar.gz', ...input } },
  }),
  finalizeDatasetVersion: (id: string): Call => ({
    field: 'finalizeDatasetVersion',
    query: `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { ${R} } }`,
    variables: { id },
  }),
  createStorageProfile: (input: object): Call => ({
    field: 'createStorageProfile',
    query: `mutation($input: CreateStorageProfileInput!) { createStorageProfile(input: $input) {
      ${R} ... on CreateStorageProfileSuccess { storageProfile { id isDefault } } } }`,
    variables: { input: { name: `storage ${randomUUID().slice(0, 8)}`, ...S3_STORAGE, ...input } },
  }),
  updateStorageProfile: (id: string, input: object): Call => ({
    field: 'updateStorageProfile',
    query: `mutation($id: ID!, $input: UpdateStorageProfileInput!) { updateStorageProfile(id: $id, input: $input) {
      ${R} ... on UpdateStorageProfileSuccess { storageProfile { id isDefault } } } }`,
    variables: { id, input },
  }),
  deleteStorageProfile: (id: string): Call => ({
    field: 'deleteStorageProfile',
    query: `mutation($id: ID!) { deleteStorageProfile(id: $id) { ${R} } }`,
    variables: { id },
  }),
  checkStorageProfile: (id: string): Call => ({
    field: 'checkStorageProfile',
    query: `mutation($id: ID!) { checkStorageProfile(id: $id) { ${R} } }`,
    variables: { id },
  }),
};

/** Objects the cases refer to, made in beforeAll. */
const fx = {
  detector: '',
  classifier: '',
  archivedModel: '',
  detectionDataset: '',
  classificationDataset: '',
  readyVersion: '',
  /** Created, nothing uploaded. */
  uploadingVersion: '',
  invalidVersion: '',
  imageFolderOnDetection: '',
  classificationVersion: '',
  platform: '',
  platform2: '',
  sagemaker: '',
  s3Storage: '',
  azureStorage: '',
  session: '',
  memberEmail: '',
};

const SAGEMAKER = {
  config: { region: 'us-east-1', roleArn: 'arn:aws:iam::123456789012:role/train', instanceType: 'ml.g5.xlarge', image: 'cvtrain/trainer:1' },
  credentials: { accessKeyId: 'AKIAVALIDATIONTEST01', secretAccessKey: 'validation-secret-access-key' },
};
const VERTEX = {
  config: { projectId: 'my-project-1', region: 'us-central1', machineType: 'g2-standard-8', image: 'cvtrain/trainer:1' },
  credentials: { clientEmail: 'trainer@my-project-1.iam.gserviceaccount.com', privateKey: '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n' },
};
const AZURE = {
  config: { subscriptionId: '00000000-0000-4000-8000-000000000001', resourceGroup: 'rg', workspace: 'ws', computeTarget: 'gpu' },
  credentials: { tenantId: '00000000-0000-4000-8000-000000000002', clientId: '00000000-0000-4000-8000-000000000003', clientSecret: 'azure-secret-1' },
};
const K8S = { config: { image: 'cvtrain/trainer:1', namespace: 'ml' }, credentials: { token: 'k8s-service-account-token' } };
// Storage profiles are only stored and presigned against here; nothing listens at these endpoints.
const S3_STORAGE = {
  kind: 'S3',
  config: { bucket: 'validation-bucket', region: 'eu-central-1', endpoint: 'http://127.0.0.1:9', forcePathStyle: true },
  credentials: { accessKeyId: 'AKIAVALIDATIONSTORE1', secretAccessKey: 'validation-storage-secret-0123' },
};
const AZURE_STORAGE = {
  kind: 'AZURE',
  config: { accountName: 'validationacct', container: 'datasets', endpoint: 'http://127.0.0.1:9/validationacct' },
  credentials: { accountKey: Buffer.from('validation-account-key-0123456789').toString('base64') },
};
const storageId = (uuid: string) => encodeGlobalID('StorageProfile', uuid);

const modelId = (uuid: string) => encodeGlobalID('Model', uuid);
const profileId = (uuid: string) => encodeGlobalID('ComputeProfile', uuid);
const longString = (n: number) => 'x'.repeat(n);

/** [description, the call, the expected `field`]. */
type Case = [string, () => Call, string];

const CASES: Record<string, Case[]> = {
  signUp: [
    ['malformed email', () => call.signUp({ email: 'nobody', password: 'correct horse battery', organizationName: 'X' }), 'input.email'],
    ['short password', () => call.signUp({ email: 'v1@example.com', password: 'short', organizationName: 'X' }), 'input.password'],
    ['password over 200 characters', () => call.signUp({ email: 'v2@example.com', password: longString(201), organizationName: 'X' }), 'input.password'],
    ['organization name over 120 characters', () => call.signUp({ email: 'v3@example.com', password: 'correct horse battery', organizationName: longString(121) }), 'input.organizationName'],
    ['control characters in the organization name', () => call.signUp({ email: 'v4@example.com', password: 'correct horse battery', organizationName: 'a\u0000b' }), 'input.organizationName'],
  ],
  signIn: [
    ['malformed email', () => call.signIn({ email: 'nobody', password: 'x' }), 'input.email'],
    ['empty password', () => call.signIn({ email: owner.email, password: '' }), 'input.password'],
    ['malformed organization id', () => call.signIn({ email: owner.email, password: owner.password, organizationId: 'garbage' }), 'input.organizationId'],
    ['organization id of another type', () => call.signIn({ email: owner.email, password: owner.password, organizationId: fx.detector }), 'input.organizationId'],
  ],
  createApiKey: [
    ['empty name', () => call.createApiKey({ name: '  ', role: 'VIEWER' }), 'input.name'],
    ['name over 120 characters', () => call.createApiKey({ name: longString(121), role: 'VIEWER' }), 'input.name'],
  ],
  revokeApiKey: [
    ['malformed id', () => call.revokeApiKey('garbage'), 'id'],
    ['id of another type', () => call.revokeApiKey(fx.detector), 'id'],
  ],
  addMember: [
    ['malformed email', () => call.addMember({ email: 'nobody', role: 'VIEWER' }), 'input.email'],
    ['email without an account', () => call.addMember({ email: 'no-account@example.com', role: 'VIEWER' }), 'input.email'],
  ],
  removeMember: [
    ['malformed user id', () => call.removeMember('garbage'), 'userId'],
    ['id of another type', () => call.removeMember(fx.detector), 'userId'],
  ],
  createModel: [
    ['empty name', () => call.createModel({ name: '' }), 'input.name'],
    ['blank name', () => call.createModel({ name: '   ' }), 'input.name'],
    ['name over 120 characters', () => call.createModel({ name: longString(121) }), 'input.name'],
    ['control characters in the name', () => call.createModel({ name: 'tab\there' }), 'input.name'],
    ['description over 4000 characters', () => call.createModel({ description: longString(4001) }), 'input.description'],
    ['empty architecture', () => call.createModel({ architecture: ' ' }), 'input.architecture'],
    ['unknown torchvision architecture', () => call.createModel({ architecture: 'fasterrcnn_resnet9000' }), 'input.architecture'],
    ['classification architecture for detection', () => call.createModel({ architecture: 'resnet18' }), 'input.architecture'],
    ['detection architecture for classification', () => call.createModel({ task: 'CLASSIFICATION', architecture: 'fasterrcnn_resnet50_fpn' }), 'input.architecture'],
    ['ultralytics -cls model for detection', () => call.createModel({ framework: 'ULTRALYTICS', architecture: 'yolov8n-cls' }), 'input.architecture'],
    ['ultralytics detector for classification', () => call.createModel({ framework: 'ULTRALYTICS', task: 'CLASSIFICATION', architecture: 'yolo11n' }), 'input.architecture'],
    ['not an ultralytics name', () => call.createModel({ framework: 'ULTRALYTICS', architecture: 'resnet18' }), 'input.architecture'],
    ['transformers for classification', () => call.createModel({ framework: 'TRANSFORMERS', task: 'CLASSIFICATION', architecture: 'rtdetr_r18vd' }), 'input.architecture'],
    ['custom trainer name with spaces', () => call.createModel({ framework: 'CUSTOM', architecture: 'my trainer' }), 'input.architecture'],
    ['cvtrain size that does not exist', () => call.createModel({ framework: 'CVTRAIN', architecture: 'cvdet_x' }), 'input.architecture'],
    ['cvtrain detector for classification', () => call.createModel({ framework: 'CVTRAIN', task: 'CLASSIFICATION', architecture: 'cvdet_n' }), 'input.architecture'],
    ['torchvision name under cvtrain', () => call.createModel({ framework: 'CVTRAIN', architecture: 'ssdlite320_mobilenet_v3_large' }), 'input.architecture'],
  ],
  updateModel: [
    ['malformed id', () => call.updateModel('garbage', { name: 'x' }), 'id'],
    ['id of another type', () => call.updateModel(fx.detectionDataset, { name: 'x' }), 'id'],
    ['model id that is not a uuid', () => call.updateModel(modelId('42'), { name: 'x' }), 'id'],
    ['empty name', () => call.updateModel(fx.detector, { name: '' }), 'input.name'],
    ['architecture of the other task', () => call.updateModel(fx.detector, { architecture: 'resnet50' }), 'input.architecture'],
    ['valid name with a bad architecture', () => call.updateModel(fx.detector, { name: 'renamed', architecture: 'nope' }), 'input.architecture'],
  ],
  archiveModel: [['malformed id', () => call.archiveModel('garbage'), 'id']],
  unarchiveModel: [['id of another type', () => call.unarchiveModel(fx.platform), 'id']],
  createDataset: [
    ['empty name', () => call.createDataset({ name: '' }), 'input.name'],
    ['description over 4000 characters', () => call.createDataset({ description: longString(4001) }), 'input.description'],
  ],
  createComputeProfile: [
    ['empty name', () => call.createComputeProfile({ name: ' ' }), 'input.name'],
    ['config that is not an object', () => call.createComputeProfile({ config: [1, 2] }), 'input.config'],
    ['unknown config key', () => call.createComputeProfile({ config: { gpus: 1, gpuz: 2 } }), 'input.config'],
    ['zero GPUs', () => call.createComputeProfile({ config: { gpus: 0 } }), 'input.config.gpus'],
    ['credentials on PLATFORM', () => call.createComputeProfile({ credentials: { token: 'abcdefgh' } }), 'input.credentials'],
    ['maxConcurrentJobs 0', () => call.createComputeProfile({ maxConcurrentJobs: 0 }), 'input.maxConcurrentJobs'],
    ['negative cost limit', () => call.createComputeProfile({ maxCostPerSessionUsd: -1 }), 'input.maxCostPerSessionUsd'],
    ['SAGEMAKER without credentials', () => call.createComputeProfile({ provider: 'SAGEMAKER', config: SAGEMAKER.config }), 'input.credentials'],
    ['SAGEMAKER region', () => call.createComputeProfile({ provider: 'SAGEMAKER', ...SAGEMAKER, config: { ...SAGEMAKER.config, region: 'Mars' } }), 'input.config.region'],
    ['SAGEMAKER role ARN', () => call.createComputeProfile({ provider: 'SAGEMAKER', ...SAGEMAKER, config: { ...SAGEMAKER.config, roleArn: 'admin' } }), 'input.config.roleArn'],
    ['SAGEMAKER instance type', () => call.createComputeProfile({ provider: 'SAGEMAKER', ...SAGEMAKER, config: { ...SAGEMAKER.config, instanceType: 'p3.2xlarge' } }), 'input.config.instanceType'],
    ['SAGEMAKER endpoint not http(s)', () => call.createComputeProfile({ provider: 'SAGEMAKER', ...SAGEMAKER, config: { ...SAGEMAKER.config, endpoint: 'ftp://sagemaker.local' } }), 'input.config.endpoint'],
    ['SAGEMAKER access key id', () => call.createComputeProfile({ provider: 'SAGEMAKER', ...SAGEMAKER, credentials: { ...SAGEMAKER.credentials, accessKeyId: 'lowercase-id' } }), 'input.credentials.accessKeyId'],
    ['SAGEMAKER short secret', () => call.createComputeProfile({ provider: 'SAGEMAKER', ...SAGEMAKER, credentials: { ...SAGEMAKER.credentials, secretAccessKey: 'short' } }), 'input.credentials.secretAccessKey'],
    ['SAGEMAKER unknown credential key', () => call.createComputeProfile({ provider: 'SAGEMAKER', ...SAGEMAKER, credentials: { ...SAGEMAKER.credentials, password: 'x' } }), 'input.credentials'],
    ['VERTEX_AI project id', () => call.createComputeProfile({ provider: 'VERTEX_AI', ...VERTEX, config: { ...VERTEX.config, projectId: 'X' } }), 'input.config.projectId'],
    ['VERTEX_AI private key not PEM', () => call.createComputeProfile({ provider: 'VERTEX_AI', ...VERTEX, credentials: { ...VERTEX.credentials, privateKey: 'hunter2' } }), 'input.credentials.privateKey'],
    ['VERTEX_AI client email', () => call.createComputeProfile({ provider: 'VERTEX_AI', ...VERTEX, credentials: { ...VERTEX.credentials, clientEmail: 'robot' } }), 'input.credentials.clientEmail'],
    ['AZURE_ML subscription id', () => call.createComputeProfile({ provider: 'AZURE_ML', ...AZURE, config: { ...AZURE.config, subscriptionId: 'sub-1' } }), 'input.config.subscriptionId'],
    ['AZURE_ML tenant id', () => call.createComputeProfile({ provider: 'AZURE_ML', ...AZURE, credentials: { ...AZURE.credentials, tenantId: 'tenant' } }), 'input.credentials.tenantId'],
    ['KUBERNETES namespace', () => call.createComputeProfile({ provider: 'KUBERNETES', ...K8S, config: { ...K8S.config, namespace: 'Bad_NS' } }), 'input.config.namespace'],
    ['KUBERNETES short token', () => call.createComputeProfile({ provider: 'KUBERNETES', ...K8S, credentials: { token: 'short' } }), 'input.credentials.token'],
    ['KUBERNETES token and kubeconfig both', () => call.createComputeProfile({ provider: 'KUBERNETES', ...K8S, credentials: { token: 'long-enough-token', kubeconfig: 'apiVersion: v1\nkind: Config\n' } }), 'input.credentials'],
    ['malformed fallback id', () => call.createComputeProfile({ fallbackProfileIds: ['garbage'] }), 'input.fallbackProfileIds.0'],
    ['second fallback malformed', () => call.createComputeProfile({ fallbackProfileIds: [fx.platform, 'garbage'] }), 'input.fallbackProfileIds.1'],
    ['fallback of another type', () => call.createComputeProfile({ fallbackProfileIds: [fx.detector] }), 'input.fallbackProfileIds.0'],
    ['fallback that does not exist', () => call.createComputeProfile({ fallbackProfileIds: [fx.platform, profileId(randomUUID())] }), 'input.fallbackProfileIds.1'],
    ['fallback listed twice', () => call.createComputeProfile({ fallbackProfileIds: [fx.platform, fx.platform] }), 'input.fallbackProfileIds'],
    ['bad fallback on a would-be default', () => call.createComputeProfile({ isDefault: true, fallbackProfileIds: ['garbage'] }), 'input.fallbackProfileIds.0'],
    ['bad config on a would-be default', () => call.createComputeProfile({ isDefault: true, config: { gpus: 17 } }), 'input.config.gpus'],
  ],
  updateComputeProfile: [
    ['malformed id', () => call.updateComputeProfile('garbage', { name: 'x' }), 'id'],
    ['empty name', () => call.updateComputeProfile(fx.platform, { name: '' }), 'input.name'],
    ['config out of range', () => call.updateComputeProfile(fx.platform, { config: { gpus: 99 } }), 'input.config.gpus'],
    ['config of another provider', () => call.updateComputeProfile(fx.platform, { config: SAGEMAKER.config }), 'input.config'],
    ['dropping SAGEMAKER credentials', () => call.updateComputeProfile(fx.sagemaker, { credentials: null }), 'input.credentials'],
    ['bad SAGEMAKER credentials', () => call.updateComputeProfile(fx.sagemaker, { credentials: { ...SAGEMAKER.credentials, accessKeyId: 'x' } }), 'input.credentials.accessKeyId'],
    ['falling back to itself', () => call.updateComputeProfile(fx.platform, { fallbackProfileIds: [fx.platform] }), 'input.fallbackProfileIds'],
    // sagemaker already falls back to platform (beforeAll), so platform -> sagemaker closes a loop.
    ['a fallback cycle', () => call.updateComputeProfile(fx.platform, { fallbackProfileIds: [fx.sagemaker] }), 'input.fallbackProfileIds'],
    ['a rename with a missing fallback', () => call.updateComputeProfile(fx.platform, { name: 'renamed', fallbackProfileIds: [profileId(randomUUID())] }), 'input.fallbackProfileIds.0'],
    ['a rename with a bad config', () => call.updateComputeProfile(fx.platform, { name: 'renamed', isDefault: true, config: { gpus: 0 } }), 'input.config.gpus'],
    ['a negative cost limit', () => call.updateComputeProfile(fx.platform, { maxCostPerSessionUsd: 0 }), 'input.maxCostPerSessionUsd'],
  ],
  deleteComputeProfile: [['malformed id', () => call.deleteComputeProfile('garbage'), 'id']],
  trainModel: [
    ['malformed model id', () => call.trainModel('garbage', {}), 'modelId'],
    ['epochs 0', () => call.trainModel(fx.detector, { config: { epochs: 0 } }), 'input.config.epochs'],
    ['epochs 1001', () => call.trainModel(fx.detector, { config: { epochs: 1001 } }), 'input.config.epochs'],
    ['image size not a multiple of 32', () => call.trainModel(fx.detector, { config: { imageSize: 100 } }), 'input.config.imageSize'],
    ['image size below 32', () => call.trainModel(fx.detector, { config: { imageSize: 16 } }), 'input.config.imageSize'],
    ['batch size 0', () => call.trainModel(fx.detector, { config: { batchSize: 0 } }), 'input.config.batchSize'],
    ['learning rate 0', () => call.trainModel(fx.detector, { config: { learningRate: 0 } }), 'input.config.learningRate'],
    ['learning rate 11', () => call.trainModel(fx.detector, { config: { learningRate: 11 } }), 'input.config.learningRate'],
    ['weight decay 2', () => call.trainModel(fx.detector, { config: { weightDecay: 2 } }), 'input.config.weightDecay'],
    ['warmup as long as training', () => call.trainModel(fx.detector, { config: { warmupEpochs: 10 } }), 'input.config.warmupEpochs'],
    ['checkpoints rarer than the last epoch', () => call.trainModel(fx.detector, { config: { checkpointEvery: 11 } }), 'input.config.checkpointEvery'],
    ['patience longer than training', () => call.trainModel(fx.detector, { config: { earlyStoppingPatience: 11 } }), 'input.config.earlyStoppingPatience'],
    ['negative seed', () => call.trainModel(fx.detector, { config: { seed: -1 } }), 'input.config.seed'],
    ['maxBatchesPerEpoch 0', () => call.trainModel(fx.detector, { config: { maxBatchesPerEpoch: 0 } }), 'input.config.maxBatchesPerEpoch'],
    ['an export format twice', () => call.trainModel(fx.detector, { config: { exportFormats: ['ONNX', 'ONNX'] } }), 'input.config.exportFormats'],
    ['empty architecture override', () => call.trainModel(fx.detector, { config: { architecture: ' ' } }), 'input.config.architecture'],
    ['architecture override of the other task', () => call.trainModel(fx.detector, { config: { architecture: 'resnet18' } }), 'input.config.architecture'],
    ['malformed dataset version id', () => call.trainModel(fx.detector, { datasetVersionId: 'garbage' }), 'input.datasetVersionId'],
    ['dataset version id of another type', () => call.trainModel(fx.detector, { datasetVersionId: fx.detectionDataset }), 'input.datasetVersionId'],
    ['dataset version still UPLOADING', () => call.trainModel(fx.detector, { datasetVersionId: fx.uploadingVersion }), 'input.datasetVersionId'],
    ['INVALID dataset version', () => call.trainModel(fx.detector, { datasetVersionId: fx.invalidVersion }), 'input.datasetVersionId'],
    ['classification dataset for a detector', () => call.trainModel(fx.detector, { datasetVersionId: fx.classificationVersion }), 'input.datasetVersionId'],
    ['detection dataset for a classifier', () => call.trainModel(fx.classifier, { datasetVersionId: fx.readyVersion }), 'input.datasetVersionId'],
    ['IMAGE_FOLDER format for a detector', () => call.trainModel(fx.detector, { datasetVersionId: fx.imageFolderOnDetection }), 'input.datasetVersionId'],
    ['malformed compute profile id', () => call.trainModel(fx.detector, { computeProfileId: 'garbage' }), 'input.computeProfileId'],
    ['compute profile id of another type', () => call.trainModel(fx.detector, { computeProfileId: fx.detector }), 'input.computeProfileId'],
  ],
  cancelTrainingSession: [
    ['malformed id', () => call.cancelTrainingSession('garbage'), 'id'],
    ['id of another type', () => call.cancelTrainingSession(fx.detector), 'id'],
  ],
  resumeTrainingSession: [
    ['malformed id', () => call.resumeTrainingSession('garbage'), 'id'],
    ['id of another type', () => call.resumeTrainingSession(fx.readyVersion), 'id'],
  ],
  createDatasetVersion: [
    ['malformed dataset id', () => call.createDatasetVersion({ datasetId: 'garbage' }), 'input.datasetId'],
    ['dataset id of another type', () => call.createDatasetVersion({ datasetId: fx.detector }), 'input.datasetId'],
    ['IMAGE_FOLDER for an object detection dataset', () => call.createDatasetVersion({ format: 'IMAGE_FOLDER' }), 'input.format'],
    ['YOLO for a classification dataset', () => call.createDatasetVersion({ datasetId: fx.classificationDataset, format: 'YOLO' }), 'input.format'],
    ['COCO for a classification dataset', () => call.createDatasetVersion({ datasetId: fx.classificationDataset, format: 'COCO' }), 'input.format'],
    ['empty filename', () => call.createDatasetVersion({ filename: ' ' }), 'input.filename'],
    ['filename that is not an archive', () => call.createDatasetVersion({ filename: 'shapes.rar' }), 'input.filename'],
    ['filename ending in .gz alone', () => call.createDatasetVersion({ filename: 'shapes.gz' }), 'input.filename'],
    ['filename with a folder', () => call.createDatasetVersion({ filename: 'sub/shapes.zip' }), 'input.filename'],
    ['filename climbing out', () => call.createDatasetVersion({ filename: '../shapes.zip' }), 'input.filename'],
    ['hidden filename', () => call.createDatasetVersion({ filename: '.zip' }), 'input.filename'],
    ['filename with a control character', () => call.createDatasetVersion({ filename: 'sha\u0000pes.zip' }), 'input.filename'],
    ['filename over 200 characters', () => call.createDatasetVersion({ filename: `${longString(197)}.zip` }), 'input.filename'],
  ],
  finalizeDatasetVersion: [
    ['malformed id', () => call.finalizeDatasetVersion('garbage'), 'id'],
    ['id of another type', () => call.finalizeDatasetVersion(fx.detectionDataset), 'id'],
    ['nothing uploaded yet', () => call.finalizeDatasetVersion(fx.uploadingVersion), 'id'],
  ],
  createStorageProfile: [
    ['empty name', () => call.createStorageProfile({ name: ' ' }), 'input.name'],
    ['name over 120 characters', () => call.createStorageProfile({ name: longString(121) }), 'input.name'],
    ['config that is not an object', () => call.createStorageProfile({ config: [1, 2] }), 'input.config'],
    ['credentials that are not an object', () => call.createStorageProfile({ credentials: 'AKIA:secret' }), 'input.credentials'],
    ['S3 bucket name with capitals', () => call.createStorageProfile({ config: { ...S3_STORAGE.config, bucket: 'My_Bucket' } }), 'input.config.bucket'],
    ['S3 without a bucket', () => call.createStorageProfile({ config: { region: 'eu-central-1' } }), 'input.config.bucket'],
    ['S3 region', () => call.createStorageProfile({ config: { ...S3_STORAGE.config, region: 'Mars North' } }), 'input.config.region'],
    ['S3 endpoint not http(s)', () => call.createStorageProfile({ config: { ...S3_STORAGE.config, endpoint: 'ftp://minio.local' } }), 'input.config.endpoint'],
    ['S3 endpoint with a query', () => call.createStorageProfile({ config: { ...S3_STORAGE.config, endpoint: 'https://minio.example.com/?x=1' } }), 'input.config.endpoint'],
    ['S3 forcePathStyle not a boolean', () => call.createStorageProfile({ config: { ...S3_STORAGE.config, forcePathStyle: 'yes' } }), 'input.config.forcePathStyle'],
    ['S3 unknown config key', () => call.createStorageProfile({ config: { ...S3_STORAGE.config, acl: 'public-read' } }), 'input.config'],
    ['S3 access key id with spaces', () => call.createStorageProfile({ credentials: { ...S3_STORAGE.credentials, accessKeyId: 'AKIA WITH SPACES' } }), 'input.credentials.accessKeyId'],
    ['S3 short secret', () => call.createStorageProfile({ credentials: { ...S3_STORAGE.credentials, secretAccessKey: 'short' } }), 'input.credentials.secretAccessKey'],
    ['S3 without a secret', () => call.createStorageProfile({ credentials: { accessKeyId: S3_STORAGE.credentials.accessKeyId } }), 'input.credentials.secretAccessKey'],
    ['S3 unknown credential key', () => call.createStorageProfile({ credentials: { ...S3_STORAGE.credentials, password: 'hunter22' } }), 'input.credentials'],
    ['AZURE account name', () => call.createStorageProfile({ ...AZURE_STORAGE, config: { ...AZURE_STORAGE.config, accountName: 'Bad-Account' } }), 'input.config.accountName'],
    ['AZURE container with "--"', () => call.createStorageProfile({ ...AZURE_STORAGE, config: { ...AZURE_STORAGE.config, container: 'data--sets' } }), 'input.config.container'],
    ['AZURE account key not base64', () => call.createStorageProfile({ ...AZURE_STORAGE, credentials: { accountKey: 'not base64 at all!' } }), 'input.credentials.accountKey'],
    ['AZURE with an S3 config', () => call.createStorageProfile({ ...AZURE_STORAGE, config: S3_STORAGE.config }), 'input.config.accountName'],
    ['bad credentials on a would-be default', () => call.createStorageProfile({ isDefault: true, credentials: { ...S3_STORAGE.credentials, secretAccessKey: 'short' } }), 'input.credentials.secretAccessKey'],
  ],
  updateStorageProfile: [
    ['malformed id', () => call.updateStorageProfile('garbage', { name: 'x' }), 'id'],
    ['id of another type', () => call.updateStorageProfile(fx.platform, { name: 'x' }), 'id'],
    ['empty name', () => call.updateStorageProfile(fx.s3Storage, { name: '' }), 'input.name'],
    ['bucket name', () => call.updateStorageProfile(fx.s3Storage, { config: { ...S3_STORAGE.config, bucket: 'x' } }), 'input.config.bucket'],
    ['config of the other kind', () => call.updateStorageProfile(fx.azureStorage, { config: S3_STORAGE.config }), 'input.config.accountName'],
    ['credentials of the other kind', () => call.updateStorageProfile(fx.s3Storage, { credentials: AZURE_STORAGE.credentials }), 'input.credentials.accessKeyId'],
    ['a rename with a short secret', () => call.updateStorageProfile(fx.s3Storage, { name: 'renamed', credentials: { ...S3_STORAGE.credentials, secretAccessKey: 'short' } }), 'input.credentials.secretAccessKey'],
    ['becoming the default with a bad endpoint', () => call.updateStorageProfile(fx.s3Storage, { isDefault: true, config: { ...S3_STORAGE.config, endpoint: 'minio:9000' } }), 'input.config.endpoint'],
  ],
  deleteStorageProfile: [
    ['malformed id', () => call.deleteStorageProfile('garbage'), 'id'],
    ['id of another type', () => call.deleteStorageProfile(fx.sagemaker), 'id'],
    ['storage profile id that is not a uuid', () => call.deleteStorageProfile(storageId('42')), 'id'],
  ],
  checkStorageProfile: [
    ['malformed id', () => call.checkStorageProfile('garbage'), 'id'],
    ['id of another type', () => call.checkStorageProfile(fx.detectionDataset), 'id'],
  ],
};

/** A fingerprint of every table's rows: any insert, update or delete changes it. */
const TABLES = ['organizations', 'users', 'memberships', 'api_keys', 'models', 'model_versions', 'datasets', 'dataset_versions', 'compute_profiles', 'storage_profiles', 'training_sessions', 'epoch_metrics', 'artifacts', 'gpu_nodes'];
async function fingerprint(): Promise<Record<string, string>> {
  const [row] = await api.orm.em.getConnection().execute<Record<string, string>[]>(
    `select ${TABLES.map((t) => `(select count(*) || ':' || coalesce(md5(string_agg(x::text, ',' order by x.id)), '') from ${t} x) as ${t}`).join(', ')}`,
  );
  return row;
}

const TRAIN_ID = `mutation($modelId: ID!, $input: TrainModelInput!) { trainModel(modelId: $modelId, input: $input) {
  ${R} ... on TrainModelSuccess { trainingSession { id status } } } }`;

async function send(c: Call, token: string | null = owner.token) {
  const res = await api.gql(c.query, c.variables, token);
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data[c.field];
}

/** A YOLO archive whose first label names class 7 of 3: finalizes INVALID. */
const brokenYolo = () =>
  datasetArchive('YOLO', {
    variant: 'class-out-of-range',
    mutate: (root) => {
      const file = path.join(root, 'labels', 'train', 'img_00000.txt');
      writeFileSync(file, readFileSync(file, 'utf8').replace(/^\d+ /, '7 '));
    },
  });

beforeAll(async () => {
  api = await startTestApi();
  owner = await signUp(api, 'Validation Inc');
  const model = async (input: object) => ok(await api.gql(call.createModel(input).query, call.createModel(input).variables, owner.token), 'createModel', 'model').id;
  fx.detector = await model({ name: 'detector' });
  fx.classifier = await model({ name: 'classifier', task: 'CLASSIFICATION', architecture: 'resnet18' });
  fx.archivedModel = await model({ name: 'archived' });
  await send(call.archiveModel(fx.archivedModel));
  fx.detectionDataset = (await send(call.createDataset({ name: 'boxes' }))).dataset.id;
  fx.classificationDataset = (await send(call.createDataset({ name: 'labels', task: 'CLASSIFICATION' }))).dataset.id;
  // Dataset versions in every state, through the public API.
  fx.readyVersion = (await uploadDatasetVersion(api, owner.token, fx.detectionDataset, datasetArchive('YOLO'))).version.id;
  fx.uploadingVersion = (await createDatasetVersion(api, owner.token, fx.detectionDataset, 'COCO')).version.id;
  const invalid = await uploadDatasetVersion(api, owner.token, fx.detectionDataset, brokenYolo());
  expect(invalid.version.status).toBe('INVALID');
  fx.invalidVersion = invalid.version.id;
  fx.classificationVersion = (await uploadDatasetVersion(api, owner.token, fx.classificationDataset, datasetArchive('IMAGE_FOLDER'))).version.id;
  // createDatasetVersion refuses IMAGE_FOLDER on a detection dataset (a case above), so no client
  // can make this version; it is forged from a READY YOLO one to test trainModel's own check.
  const forged = await uploadDatasetVersion(api, owner.token, fx.detectionDataset, datasetArchive('YOLO'));
  await api.orm.em.getConnection().execute(`update dataset_versions set format = 'IMAGE_FOLDER' where id = ?`, [decodeGlobalID(forged.version.id).id]);
  fx.imageFolderOnDetection = forged.version.id;
  fx.platform = (await send(call.createComputeProfile({ name: 'platform', isDefault: true }))).computeProfile.id;
  fx.platform2 = (await send(call.createComputeProfile({ name: 'platform 2' }))).computeProfile.id;
  fx.sagemaker = (await send(call.createComputeProfile({ name: 'sagemaker', provider: 'SAGEMAKER', strategy: 'PREFERRED', ...SAGEMAKER, fallbackProfileIds: [fx.platform] })))
    .computeProfile.id;
  // Not the default: the organization's datasets stay in the platform's storage.
  fx.s3Storage = (await send(call.createStorageProfile({ name: 's3' }))).storageProfile.id;
  fx.azureStorage = (await send(call.createStorageProfile({ name: 'azure', ...AZURE_STORAGE }))).storageProfile.id;
  const member = await signUp(api, 'Member home');
  fx.memberEmail = member.email;
  await send(call.addMember({ email: member.email, role: 'MEMBER' }));
}, 60_000);
afterAll(() => api?.close());

describe.each(Object.entries(CASES))('%s', (_mutation, cases) => {
  it.each(cases.map(([label, make, field]) => [label, field, make] as const))('%s -> %s', async (_label, field, make) => {
    const c = make();
    const before = await fingerprint();
    const result = await send(c);
    expect(result).toMatchObject({ __typename: 'ValidationError', field });
    // The message names the field too, for humans reading it without the field.
    expect(result.message.startsWith(`${field}: `)).toBe(true);
    expect(await fingerprint()).toEqual(before);
  });
});

describe('each valid call above is accepted', () => {
  // The cases above differ from these in one value only, so they failed for that value.
  it.each([
    ['createModel', () => call.createModel({})],
    ['createModel ULTRALYTICS classifier', () => call.createModel({ framework: 'ULTRALYTICS', task: 'CLASSIFICATION', architecture: 'yolo11n-cls' })],
    ['createModel TRANSFORMERS detector', () => call.createModel({ framework: 'TRANSFORMERS', architecture: 'rtdetr_r18vd' })],
    ['createModel CUSTOM', () => call.createModel({ framework: 'CUSTOM', architecture: 'my_pkg.trainers:Custom' })],
    ['createModel CVTRAIN detector', () => call.createModel({ framework: 'CVTRAIN', architecture: 'cvdet_n' })],
    ['createComputeProfile SAGEMAKER', () => call.createComputeProfile({ provider: 'SAGEMAKER', ...SAGEMAKER, config: { ...SAGEMAKER.config, endpoint: 'http://127.0.0.1:9000' } })],
    ['createComputeProfile VERTEX_AI', () => call.createComputeProfile({ provider: 'VERTEX_AI', ...VERTEX })],
    ['createComputeProfile AZURE_ML', () => call.createComputeProfile({ provider: 'AZURE_ML', ...AZURE })],
    ['createComputeProfile KUBERNETES', () => call.createComputeProfile({ provider: 'KUBERNETES', ...K8S })],
    ['createComputeProfile with fallbacks', () => call.createComputeProfile({ strategy: 'PREFERRED', fallbackProfileIds: [fx.platform, fx.platform2] })],
    ['trainModel with every option', () =>
      call.trainModel(fx.detector, {
        computeProfileId: fx.sagemaker,
        config: { epochs: 10, imageSize: 320, batchSize: 4, learningRate: 0.005, weightDecay: 0.0001, warmupEpochs: 9, checkpointEvery: 10, earlyStoppingPatience: 10, seed: 0, maxBatchesPerEpoch: 5, exportFormats: ['ONNX'], architecture: 'fasterrcnn_resnet50_fpn', optimizer: 'ADAMW', amp: 'OFF' },
      })],
    ['trainModel classifier on IMAGE_FOLDER', () => call.trainModel(fx.classifier, { datasetVersionId: fx.classificationVersion })],
    ['createDatasetVersion YOLO .tar.gz', () => call.createDatasetVersion({})],
    ['createDatasetVersion COCO .zip', () => call.createDatasetVersion({ format: 'COCO', filename: 'Shapes (v2)+coco.zip' })],
    ['createDatasetVersion IMAGE_FOLDER .tgz on a classification dataset', () => call.createDatasetVersion({ datasetId: fx.classificationDataset, format: 'IMAGE_FOLDER', filename: 'cls.tgz' })],
    ['createDatasetVersion .tar', () => call.createDatasetVersion({ filename: 'plain.tar' })],
    ['createDatasetVersion filename of 200 characters', () => call.createDatasetVersion({ filename: `${longString(196)}.zip` })],
    ['createStorageProfile S3 with defaults', () => call.createStorageProfile({ config: { bucket: 'just-a-bucket' } })],
    ['createStorageProfile S3 with a session token', () => call.createStorageProfile({ credentials: { ...S3_STORAGE.credentials, sessionToken: 'FwoGZXIvYXdzEJr-session-token' } })],
    ['createStorageProfile AZURE', () => call.createStorageProfile({ ...AZURE_STORAGE })],
    ['updateStorageProfile S3 config and credentials', () => call.updateStorageProfile(fx.s3Storage, { config: { ...S3_STORAGE.config, bucket: 'other-bucket' }, credentials: S3_STORAGE.credentials })],
  ] as [string, () => Call][])('%s', async (_label, make) => {
    const result = await send(make());
    expect(result.__typename, JSON.stringify(result)).toMatch(/Success$/);
  });
});

describe('values GraphQL itself refuses', () => {
  it.each([
    ['epochs as a string', { epochs: 'ten' }, /epochs/],
    ['epochs as a fraction', { epochs: 2.5 }, /epochs/],
    ['an unknown optimizer', { epochs: 2, optimizer: 'LION' }, /optimizer|LION/i],
    ['an unknown config key', { epochs: 2, dropout: 0.1 }, /dropout/],
  ] as const)('%s fails before any resolver runs', async (_label, config, mentions) => {
    const before = await fingerprint();
    const res = await api.gql(call.trainModel(fx.detector, {}).query, { modelId: fx.detector, input: { datasetVersionId: fx.readyVersion, config } }, owner.token);
    expect(res.data ?? null).toBeNull();
    expect(res.errors?.[0].message).toMatch(mentions);
    expect(await fingerprint()).toEqual(before);
  });
});

describe('pagination arguments', () => {
  it.each([
    ['{ models(first: 101) { totalCount } }', 'first'],
    ['{ models(first: -1) { totalCount } }', 'first'],
    ['{ datasets(first: 1, last: 1) { totalCount } }', 'first'],
    ['{ computeProfiles(last: 500) { totalCount } }', 'last'],
    ['{ trainingSessions(after: "not-a-cursor") { totalCount } }', 'after'],
    ['{ models(before: "bm90LWEtY3Vyc29y") { totalCount } }', 'before'],
  ])('%s -> %s', async (query, field) => {
    const res = await api.gql(query, {}, owner.token);
    expect(res.errors?.[0].extensions).toMatchObject({ code: 'BAD_USER_INPUT', field });
  });

  it('malformed ids in getters and filters name the argument', async () => {
    for (const [query, field] of [
      ['{ model(id: "garbage") { id } }', 'id'],
      ['{ computeProfile(id: "garbage") { id } }', 'id'],
      ['{ trainingSessions(filter: { modelId: "garbage" }) { totalCount } }', 'filter.modelId'],
    ]) {
      const res = await api.gql(query, {}, owner.token);
      expect(res.errors?.[0].extensions, query).toMatchObject({ code: 'BAD_USER_INPUT', field });
    }
  });
});

describe('conflicts', () => {
  // Fixtures of their own, so the cases above cannot have renamed them.
  const taken = { model: '', otherModel: '', profile: '', otherProfile: '', otherStorage: '', usedStorage: '', usedStorageOwner: '', queuedSession: '', cancelledSession: '' };
  beforeAll(async () => {
    await send(call.createStorageProfile({ name: 'taken storage' }));
    taken.otherStorage = (await send(call.createStorageProfile({ name: 'other storage' }))).storageProfile.id;
    taken.queuedSession = (await send({ ...call.trainModel(fx.detector, {}), query: TRAIN_ID })).trainingSession.id;
    taken.cancelledSession = (await send({ ...call.trainModel(fx.detector, {}), query: TRAIN_ID })).trainingSession.id;
    expect((await send(call.cancelTrainingSession(taken.cancelledSession))).__typename).toBe('CancelTrainingSessionSuccess');
    // A profile that holds a dataset archive: in an organization of its own, whose default it is
    // (presigning needs no network, so no S3 service is involved).
    const org = await signUp(api, 'Storage in use');
    taken.usedStorageOwner = org.token;
    taken.usedStorage = (await send(call.createStorageProfile({ name: 'used', isDefault: true }), org.token)).storageProfile.id;
    const dataset = (await send(call.createDataset({ name: 'kept there' }), org.token)).dataset.id;
    const upload = await createDatasetVersion(api, org.token, dataset, 'YOLO');
    expect(upload.uploadUrl.startsWith('http://127.0.0.1:9/validation-bucket/')).toBe(true);
    taken.model = (await send(call.createModel({ name: 'taken model' }))).model.id;
    taken.otherModel = (await send(call.createModel({ name: 'other model' }))).model.id;
    await send(call.createDataset({ name: 'taken data' }));
    taken.profile = (await send(call.createComputeProfile({ name: 'taken profile' }))).computeProfile.id;
    taken.otherProfile = (await send(call.createComputeProfile({ name: 'other profile' }))).computeProfile.id;
    await send(call.createComputeProfile({ name: 'leans on taken', strategy: 'PREFERRED', fallbackProfileIds: [taken.profile] }));
  });

  it.each([
    ['a second model with the same name', () => call.createModel({ name: 'taken model' })],
    ['the same model name with other spacing', () => call.createModel({ name: '  taken model  ' })],
    ['renaming a model onto another', () => call.updateModel(taken.otherModel, { name: 'taken model' })],
    ['a second dataset with the same name', () => call.createDataset({ name: 'taken data' })],
    ['a second compute profile with the same name', () => call.createComputeProfile({ name: 'taken profile' })],
    ['renaming a compute profile onto another', () => call.updateComputeProfile(taken.otherProfile, { name: 'taken profile' })],
    ['adding an existing member', () => call.addMember({ email: fx.memberEmail, role: 'ADMIN' })],
    ['adding yourself', () => call.addMember({ email: owner.email, role: 'VIEWER' })],
    ['training an archived model', () => call.trainModel(fx.archivedModel, {})],
    ['deleting a profile another falls back to', () => call.deleteComputeProfile(taken.profile)],
    ['a second storage profile with the same name', () => call.createStorageProfile({ name: 'taken storage' })],
    ['renaming a storage profile onto another', () => call.updateStorageProfile(taken.otherStorage, { name: 'taken storage' })],
    ['deleting a storage profile a dataset version keeps its archive in', () => call.deleteStorageProfile(taken.usedStorage), () => taken.usedStorageOwner],
    ['finalizing a READY version again', () => call.finalizeDatasetVersion(fx.readyVersion)],
    ['finalizing an INVALID version again', () => call.finalizeDatasetVersion(fx.invalidVersion)],
    ['resuming a QUEUED session', () => call.resumeTrainingSession(taken.queuedSession)],
    ['resuming a CANCELLED session', () => call.resumeTrainingSession(taken.cancelledSession)],
    ['cancelling a CANCELLED session', () => call.cancelTrainingSession(taken.cancelledSession)],
  ] as [string, () => Call, (() => string)?][])('%s is a ConflictError and writes nothing', async (_label, make, token) => {
    const before = await fingerprint();
    const result = await send(make(), token?.() ?? owner.token);
    expect(result.__typename, JSON.stringify(result)).toBe('ConflictError');
    expect(await fingerprint()).toEqual(before);
  });

  it('a conflict does not break the next mutation in the same request', async () => {
    const res = await api.gql(
      `mutation($dup: CreateModelInput!, $fresh: CreateModelInput!) {
        dup: createModel(input: $dup) { __typename }
        fresh: createModel(input: $fresh) { __typename }
      }`,
      { dup: call.createModel({ name: 'taken model' }).variables.input, fresh: call.createModel({}).variables.input },
      owner.token,
    );
    expect(res.data).toEqual({ dup: { __typename: 'ConflictError' }, fresh: { __typename: 'CreateModelSuccess' } });
  });
});

describe('a failed mutation leaves nothing behind for a later mutation in the same request', () => {
  it.each([
    ['updateComputeProfile with a rename and a bad config', '$id: ID!', 'updateComputeProfile(id: $id, input: { name: "NAME", config: { gpus: 0 } })'],
    ['updateComputeProfile with a rename and a missing fallback', '$id: ID!, $missing: ID!', 'updateComputeProfile(id: $id, input: { name: "NAME", fallbackProfileIds: [$missing] })'],
    ['createComputeProfile with a missing fallback', '$missing: ID!', 'createComputeProfile(input: { name: "NAME", provider: PLATFORM, strategy: QUEUE, fallbackProfileIds: [$missing] })'],
    ['updateModel with a rename and a bad architecture', '$model: ID!', 'updateModel(id: $model, input: { name: "NAME", architecture: "nope" })'],
    ['updateStorageProfile with a rename and a bad bucket', '$storage: ID!', 'updateStorageProfile(id: $storage, input: { name: "NAME", config: { bucket: "B" } })'],
    ['updateStorageProfile with a rename, a new default and bad credentials', '$storage: ID!', 'updateStorageProfile(id: $storage, input: { name: "NAME", isDefault: true, credentials: { accessKeyId: "AKIAOK" } })'],
    ['createStorageProfile as default with a bad endpoint', '', 'createStorageProfile(input: { name: "NAME", kind: S3, isDefault: true, config: { bucket: "fine-bucket", endpoint: "nope" }, credentials: { accessKeyId: "AKIAOK", secretAccessKey: "long enough secret" } })'],
  ])('%s', async (_label, variableDefinitions, failing) => {
    const name = `half renamed ${randomUUID().slice(0, 8)}`;
    failing = failing.replace('NAME', name);
    const before = await fingerprint();
    const all = { id: fx.platform2, model: fx.classifier, missing: profileId(randomUUID()), storage: fx.s3Storage } as Record<string, string>;
    const res = await api.gql(
      `mutation${variableDefinitions ? `(${variableDefinitions})` : ''} {
        failing: ${failing} { __typename }
        other: createDataset(input: { name: "${randomUUID()}", task: OBJECT_DETECTION }) { __typename }
      }`,
      Object.fromEntries(Object.entries(all).filter(([k]) => variableDefinitions.includes(`$${k}:`))),
      owner.token,
    );
    expect(res.errors).toBeUndefined();
    expect(res.data.failing.__typename).toBe('ValidationError');
    expect(res.data.other.__typename).toBe('CreateDatasetSuccess');
    const after = await fingerprint();
    // Only the dataset was written.
    expect({ ...after, datasets: '' }).toEqual({ ...before, datasets: '' });
    const names = await api.orm.em.getConnection().execute<{ n: string }[]>(
      `select (select count(*) from compute_profiles where name = ?) + (select count(*) from models where name = ?) +
         (select count(*) from storage_profiles where name = ?) as n`,
      [name, name, name],
    );
    expect(Number(names[0].n)).toBe(0);
  });
});

describe('one default compute profile per organization', () => {
  const defaults = async (orgId: string) =>
    (
      await api.orm.em
        .getConnection()
        .execute<{ id: string }[]>('select id from compute_profiles where organization_id = ? and is_default order by id', [decodeGlobalID(orgId).id])
    ).map((r) => profileId(r.id));

  it('creating a second default clears the first; updating moves it; unsetting leaves none', async () => {
    const org = await signUp(api, 'Defaults Inc');
    const create = async (name: string, isDefault: boolean) =>
      (await send(call.createComputeProfile({ name, isDefault }), org.token)).computeProfile;
    const first = await create('first', true);
    expect(first.isDefault).toBe(true);
    expect(await defaults(org.orgId)).toEqual([first.id]);

    const second = await create('second', true);
    expect(second.isDefault).toBe(true);
    expect(await defaults(org.orgId)).toEqual([second.id]);
    const listed = await api.gql('{ computeProfiles { edges { node { id isDefault } } } }', {}, org.token);
    expect(listed.data.computeProfiles.edges.map((e: any) => e.node).filter((p: any) => p.isDefault)).toEqual([{ id: second.id, isDefault: true }]);

    const third = await create('third', false);
    expect(await defaults(org.orgId)).toEqual([second.id]);

    const moved = await send(call.updateComputeProfile(first.id, { isDefault: true }), org.token);
    expect(moved.computeProfile.isDefault).toBe(true);
    expect(await defaults(org.orgId)).toEqual([first.id]);

    // Setting the default again on the default changes nothing.
    expect((await send(call.updateComputeProfile(first.id, { isDefault: true }), org.token)).computeProfile.isDefault).toBe(true);
    expect(await defaults(org.orgId)).toEqual([first.id]);

    const unset = await send(call.updateComputeProfile(first.id, { isDefault: false }), org.token);
    expect(unset.computeProfile.isDefault).toBe(false);
    expect(await defaults(org.orgId)).toEqual([]);

    // A failed attempt to become the default keeps the current one.
    await send(call.updateComputeProfile(third.id, { isDefault: true }), org.token);
    const failed = await send(call.updateComputeProfile(second.id, { isDefault: true, config: { gpus: 0 } }), org.token);
    expect(failed.__typename).toBe('ValidationError');
    expect(await defaults(org.orgId)).toEqual([third.id]);
  });

  it('the database itself refuses a second default', async () => {
    const org = await signUp(api, 'Defaults DB');
    await send(call.createComputeProfile({ name: 'a', isDefault: true }), org.token);
    await send(call.createComputeProfile({ name: 'b' }), org.token);
    await expect(
      api.orm.em
        .getConnection()
        .execute(`update compute_profiles set is_default = true where organization_id = ? and name = 'b'`, [decodeGlobalID(org.orgId).id]),
    ).rejects.toThrow(/compute_profiles_one_default_per_org/);
  });

  it('concurrent defaults still end with exactly one', async () => {
    const org = await signUp(api, 'Defaults race');
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => api.gql(call.createComputeProfile({ name: `race ${i}`, isDefault: true }).query, call.createComputeProfile({ name: `race ${i}`, isDefault: true }).variables, org.token)),
    );
    // Each one made itself the default in turn: all succeed and exactly one is left.
    expect(results.map((r) => r.errors ?? r.data.createComputeProfile.__typename)).toEqual(Array(6).fill('CreateComputeProfileSuccess'));
    expect(await defaults(org.orgId)).toHaveLength(1);
  });
});

describe('coverage', () => {
  it('every mutation that takes input or an id has validation cases here', async () => {
    const res = await api.gql('{ __schema { mutationType { fields { name args { name } } } } }');
    const withArgs = res.data.__schema.mutationType.fields.filter((f: { args: unknown[] }) => f.args.length > 0).map((f: { name: string }) => f.name);
    expect(Object.keys(CASES).sort()).toEqual(withArgs.sort());
  });

  it('every training config field that the resolver validates has a case', async () => {
    const res = await api.gql('{ __type(name: "TrainingConfigInput") { inputFields { name type { kind name ofType { kind name } } } } }');
    // Enums are refused by GraphQL itself (see "values GraphQL itself refuses").
    const checked = res.data.__type.inputFields
      .filter((f: any) => (f.type.ofType ?? f.type).kind !== 'ENUM')
      .map((f: { name: string }) => `input.config.${f.name}`)
      .sort();
    const covered = [...new Set(CASES.trainModel.map(([, , field]) => field).filter((f) => f.startsWith('input.config.')))].sort();
    expect(covered).toEqual(checked);
  });
});
