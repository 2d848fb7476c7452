/**
 * Routing a pool of bridges: every call of a session carries the user id as gRPC metadata
 * (`x-user-id`, an HTTP/2 header on the wire), so a proxy in front of several bridges can send all
 * of one user's calls to the bridge that holds that user's session (deploy/haproxy/haproxy.cfg
 * hashes on it and remembers where each user's JoinRoom went). A bridge reached directly ignores it.
 */
import { Metadata } from "@grpc/grpc-js";

/** The metadata key the proxy routes on. */
export const ROUTING_KEY = "x-user-id";

/**
 * StreamAudio metadata: the notices this client understands (AudioChunk.notice). "draining": the
 * bridge asks for a make-before-break re-join elsewhere before it goes away (a rolling restart).
 */
export const NOTICES_KEY = "x-bridge-notices";
export const UNDERSTOOD_NOTICES = "draining";

/** Metadata for `userId`'s StreamAudio call: the routing key and the notices this client handles. */
export function streamMetadata(userId: string): Metadata {
  const metadata = routingMetadata(userId);
  metadata.set(NOTICES_KEY, UNDERSTOOD_NOTICES);
  return metadata;
}

/**
 * Metadata for a call of `userId`'s session. `waitForReady`: the call waits for the channel to
 * connect (within its deadline) instead of failing at once (grpc-js takes it as a metadata option).
 */
export function routingMetadata(userId: string, waitForReady = false): Metadata {
  const metadata = waitForReady ? new Metadata({ waitForReady: true }) : new Metadata();
  if (userId) {
    metadata.set(ROUTING_KEY, userId);
  }
  return metadata;
}
