/**
 * @hes/proto: the wire. Control plane: generated protobuf-es messages and services (src/gen)
 * and the grpc-js glue. Data plane: the framed binary protocol over TCP, TLS or unix sockets.
 */

export {
  type FrameCall,
  FrameClient,
  type FrameClientOptions,
  type FrameReply,
} from "./frame/client.js";
export {
  bodyChecksum,
  encodeFrame,
  FRAME_MAGIC,
  FRAME_VERSION,
  type Frame,
  FrameDecoder,
  type FrameDecoderLimits,
  type FrameFields,
  FrameKind,
  FrameStatus,
} from "./frame/codec.js";
export {
  type FrameAddress,
  type FrameHandler,
  type FrameRequest,
  type FrameResponse,
  FrameServer,
  type FrameServerOptions,
  type FrameServerStats,
} from "./frame/server.js";
export * from "./gen/hes/v1/cluster_map_pb.js";
export * from "./gen/hes/v1/cluster_pb.js";
export * from "./gen/hes/v1/host_pb.js";
export * from "./gen/hes/v1/raft_pb.js";
export {
  type AddServiceOptions,
  addService,
  bindServer,
  type CallContext,
  type CallOptions,
  type ClientMethod,
  type CreateClientOptions,
  createClient,
  createServer,
  GRPC_CHANNEL_OPTIONS,
  GRPC_SERVER_OPTIONS,
  hesErrorFromGrpc,
  type ServerHandler,
  type ServiceClient,
  type ServiceClientOf,
  type ServiceImplementation,
} from "./grpc.js";
export {
  CONTROL_MESSAGE_BYTES_MAX,
  FRAME_CLIENT_INFLIGHT_DEFAULT,
  FRAME_CLIENT_WAITERS_MAX,
  FRAME_CONNECT_TIMEOUT_MS_DEFAULT,
  FRAME_CONNECTIONS_DEFAULT,
  FRAME_DEADLINE_MS_DEFAULT,
  FRAME_HEADER_BYTES,
  FRAME_INFLIGHT_PER_CONNECTION_DEFAULT,
  FRAME_META_BYTES_MAX,
  FRAME_PAYLOAD_BYTES_DEFAULT,
  FRAME_PAYLOAD_BYTES_MAX,
} from "./limits.js";
export {
  GRPC_STATUS_BY_HES_CODE,
  HES_CODE_METADATA_KEY,
  HES_DETAILS_METADATA_KEY,
  hesCodeForGrpcStatus,
} from "./status.js";
