/**
 * Deliberately broken builds for the fault suite (test/faults, issue 8 "it must be able to
 * fail"). A suite that never fails proves nothing: run against a host that lies about
 * durability, it must report violations. Nothing here is on unless the operator sets the
 * variable to exactly `1`, and the host then warns loudly at start and on every export.
 */
import type { BlockDevice, WriteRequest } from "@hes/blockdev";
import { FAULT_ACK_BEFORE_WRITE_DELAY_MS, FAULT_ACK_BEFORE_WRITE_PENDING_MAX } from "./limits.js";

/** Which lies the host tells. Every field absent or false: a correct host. */
export interface HostFaults {
  /**
   * Acknowledge a volume write as soon as it is queued and issue the real write
   * `FAULT_ACK_BEFORE_WRITE_DELAY_MS` later (or never, if the process dies first): a kill -9
   * of the serving node then loses acknowledged writes.
   */
  readonly ackBeforeWrite?: boolean;
}

/** `HES_FAULT_ACK_BEFORE_WRITE=1` (exactly `1`; anything else is a correct host). */
export function hostFaultsFromEnv(env: Readonly<Record<string, string | undefined>>): HostFaults {
  return env.HES_FAULT_ACK_BEFORE_WRITE === "1" ? { ackBeforeWrite: true } : {};
}

/** True when any fault is on. */
export function anyHostFault(faults: HostFaults | undefined): boolean {
  return faults?.ackBeforeWrite === true;
}

/** A device that acknowledges writes before doing them, plus how to cancel what is queued. */
export interface BrokenDevice {
  readonly device: BlockDevice;
  /** Drops the writes not yet issued (they were acknowledged: that is the lie). */
  cancel(): void;
}

/**
 * Wraps `device` so that `write` resolves at once and the real write starts after
 * `delayMs`. Reads go straight to `device` (so a read soon after an acknowledged write can be
 * stale: also a violation the suite must see). Flush resolves without waiting for the queued
 * writes. Past `FAULT_ACK_BEFORE_WRITE_PENDING_MAX` queued writes, a write is done for real
 * (bounded memory), which keeps the lie partial but never unbounded.
 */
export function ackBeforeWriteDevice(
  device: BlockDevice,
  onError: (error: unknown) => void,
  delayMs: number = FAULT_ACK_BEFORE_WRITE_DELAY_MS,
): BrokenDevice {
  const pending = new Set<NodeJS.Timeout>();
  const write = async (request: WriteRequest): Promise<void> => {
    if (pending.size >= FAULT_ACK_BEFORE_WRITE_PENDING_MAX) return device.write(request);
    // The caller may reuse its buffer once acknowledged: keep a copy for the late write.
    const late: WriteRequest = { ...request, data: Uint8Array.from(request.data) };
    const timer = setTimeout(() => {
      pending.delete(timer);
      device.write(late).catch(onError);
    }, delayMs);
    pending.add(timer);
  };
  return {
    device: {
      get sizeBytes() {
        return device.sizeBytes;
      },
      logicalBlockBytes: device.logicalBlockBytes,
      preferredBlockBytes: device.preferredBlockBytes,
      maxRequestBytes: device.maxRequestBytes,
      readOnly: device.readOnly,
      multiConnSafe: device.multiConnSafe,
      read: (r) => device.read(r),
      write,
      flush: async () => undefined,
      discard: (r) => device.discard(r),
      writeZeroes: (r) => device.writeZeroes(r),
      allocation: (r) => device.allocation(r),
    },
    cancel() {
      for (const timer of pending) clearTimeout(timer);
      pending.clear();
    },
  };
}
