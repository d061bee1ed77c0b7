/**
 * @hes/extent-store: one host's direct-attached disks. A log-structured, checksummed store of
 * chunk data over the `Disk` interface (`ExtentStore`), and the real `Disk` over a file or raw
 * block device (`FileDisk`). See README.md for the contract and FORMAT.md for the disk layout.
 */
export type { BlockState } from "./block-maps.js";
export type { ChunkId } from "./chunk-id.js";
export {
  type BadBlock,
  type ChangeQuery,
  type ChunkExportPiece,
  type ChunkInfo,
  type ChunkRun,
  type ChunkVersion,
  type DiskStats,
  type ExportOptions,
  ExtentStore,
  type ExtentStoreOptions,
  type ImportOptions,
  type ScrubReport,
  type SnapshotInfo,
  type StoreDisk,
  type StoreStats,
  type ViewOptions,
  type WriteStamp,
} from "./extent-store.js";
export {
  FileDisk,
  type FileDiskOptions,
  type FileDiskSyscalls,
  fileDiskSyscalls,
} from "./file-disk.js";
export { FORMAT_VERSION } from "./format.js";
export * as extentStoreLimits from "./limits.js";
