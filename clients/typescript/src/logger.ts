/**
 * The logging surface the client needs: the `(object, message)` form of pino's methods, so the
 * cloud's pino child logger can be passed as is. Nothing the client logs ever contains a token.
 */
export interface Logger {
  debug(fields: Record<string, unknown>, message?: string): void;
  info(fields: Record<string, unknown>, message?: string): void;
  warn(fields: Record<string, unknown>, message?: string): void;
  error(fields: Record<string, unknown>, message?: string): void;
}

function ignore(): void {
  // Logging is opt-in: a library stays quiet unless given a logger.
}

export const silentLogger: Logger = Object.freeze({ debug: ignore, info: ignore, warn: ignore, error: ignore });

/** The message of anything thrown, for log fields and error texts. */
export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
