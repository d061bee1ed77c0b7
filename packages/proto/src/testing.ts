/** The echo service used to test the gRPC glue; not part of the production schema. */
export * from "./gen/hes/testing/v1/echo_pb.js";
