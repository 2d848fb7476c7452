export {
  type AvailabilityChange,
  type AvailabilityOptions,
  BridgeAvailability,
  BridgeUnavailableError,
  DEFAULT_AVAILABILITY,
} from "./availability";
export { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff";
export {
  BridgeChannel,
  type BridgeChannelOptions,
  type BridgeHealth,
  type ChannelLease,
  defaultBridgeAddress,
  type ServingStatus,
  sharedBridgeChannel,
} from "./channel";
export {
  ClientDisposedError,
  type ConnectParams,
  type JoinResult,
  JoinRoomError,
  LiveKitGrpcClient,
  type LiveKitGrpcClientOptions,
  type ReconnectOptions,
  type SessionStatus,
  type StopAudioParams,
  type StopAudioResult,
} from "./client";
export {
  isUserSessionLike,
  type LegacyBridgeEvent,
  type LegacyBridgeStatus,
  type SessionLogger,
  type UserSessionLike,
} from "./legacy";
export { int64ToNumber, isTerminal, type PlayAudioEvent, type PlayAudioEventType, toPlayAudioEvent } from "./events";
export type { Logger } from "./logger";
export { AudioPacer, type AudioPacerOptions, type PacerCounters, type PacerMode } from "./pacer";
export { type PlayAudioListener, type PlayAudioParams, playAudioRequest } from "./playback";
export { defaultProtoPath, EnumNames, LOADER_OPTIONS, loadBridgeProto, SERVICE_NAME } from "./proto";
export {
  type AudioStreamState,
  END_REASON_KEY,
  isTakeover,
  ReconnectingAudioStream,
  type StateChange,
  type StreamCounters,
  type StreamEnd,
} from "./stream";

import { LiveKitGrpcClient } from "./client";

/** The old module's default export: `import LiveKitGrpcClient from "..."` keeps working. */
export default LiveKitGrpcClient;
export { NOTICES_KEY, ROUTING_KEY, routingMetadata, streamMetadata } from "./routing";
