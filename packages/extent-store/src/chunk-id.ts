/**
 * Chunk identity and argument checks shared by the public API.
 */
import { checkInteger } from "@hes/base";

/** A chunk: the placement unit of a volume, named by the volume's id and its index in it. */
export interface ChunkId {
  /** The volume's id (a safe integer ≥ 0, assigned by the cluster map). */
  readonly volumeId: number;
  /** The chunk's index within the volume (a safe integer ≥ 0). */
  readonly chunkIndex: number;
}

/** Checks a ChunkId from a caller; throws TypeError/RangeError naming the bad field. */
export function checkChunkId(chunk: unknown, name = "chunk"): ChunkId {
  if (typeof chunk !== "object" || chunk === null) {
    throw new TypeError(`${name} must be { volumeId, chunkIndex }`);
  }
  const candidate = chunk as Partial<ChunkId>;
  checkInteger(candidate.volumeId, `${name}.volumeId`, { min: 0 });
  checkInteger(candidate.chunkIndex, `${name}.chunkIndex`, { min: 0 });
  return candidate as ChunkId;
}

/** A compact map key for a chunk. */
export function chunkKey(volumeId: number, chunkIndex: number): string {
  return `${volumeId}/${chunkIndex}`;
}

/** Human-readable chunk name for messages. */
export function chunkName(chunk: ChunkId): string {
  return `chunk ${chunk.volumeId}/${chunk.chunkIndex}`;
}
