/** Types of the example's minimal NBD client (nbd-client.mjs), for tests written in TS. */
export declare class NbdClient {
  static open(socketPath: string, exportName: string): Promise<NbdClient>;
  readonly sizeBytes: number;
  write(offsetBytes: number, data: Buffer): Promise<undefined>;
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  flush(): Promise<undefined>;
  close(): Promise<void>;
}
