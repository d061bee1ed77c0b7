/**
 * @hes/blockdev: the in-process virtual disk. The BlockDevice contract that exporters (NBD)
 * and volumes share; `VolumeManager` (lifecycle through the cluster map) and `Volume` (the
 * replicated data path: ordered fan-out to chunk replicas, quorum, fencing, seal/reconcile,
 * snapshots, clones, diff, QoS); and MemoryBlockDevice, a sparse in-memory device for tests.
 */
export type {
  AllocationExtent,
  BlockDevice,
  RangeRequest,
  WriteRequest,
  WriteZeroesRequest,
} from "./block-device.js";
export type { ChangedExtent } from "./geometry.js";
export * as volumeLimits from "./limits.js";
export {
  MEMORY_DEVICE_BLOCK_BYTES,
  MEMORY_DEVICE_LOGICAL_BLOCK_BYTES,
  MEMORY_DEVICE_MAX_REQUEST_BYTES_DEFAULT,
  MEMORY_DEVICE_SIZE_BYTES_MAX,
  MemoryBlockDevice,
  type MemoryBlockDeviceOptions,
  type MemoryBlockDeviceStats,
} from "./memory-block-device.js";
export type { QosLimits } from "./token-bucket.js";
export {
  type CompareAndWriteRequest,
  type CopyRangeRequest,
  type CopyRangeResult,
  type FlattenJob,
  type SpaceFigures,
  Volume,
} from "./volume.js";
export {
  type CreateVolumeOptions,
  isLeaseLost,
  type OpenVolumeOptions,
  type VolumeInfo,
  VolumeManager,
  type VolumeManagerOptions,
} from "./volume-manager.js";
