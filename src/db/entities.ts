// The full data model, listed once for the ORM and the migrator.
import { ComputeProfile } from '../modules/compute/entity.js';
import { Dataset, DatasetVersion } from '../modules/datasets/entity.js';
import { Model, ModelVersion } from '../modules/models/entity.js';
import { GpuNode } from '../modules/nodes/entity.js';
import { StorageProfile } from '../modules/storage/entity.js';
import { ApiKey, Membership, Organization, OrgDataVersion, User } from '../modules/orgs/entity.js';
import { Artifact, EpochMetric, TrainingSession } from '../modules/training/entity.js';

export const entities = [
  Organization,
  User,
  Membership,
  ApiKey,
  Model,
  ModelVersion,
  Dataset,
  DatasetVersion,
  ComputeProfile,
  StorageProfile,
  TrainingSession,
  EpochMetric,
  Artifact,
  GpuNode,
  OrgDataVersion,
];
