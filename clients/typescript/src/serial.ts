/**
 * Runs async operations one after another. The client funnels every JoinRoom and LeaveRoom of a
 * session through one queue: a background re-join racing a caller's connect() could otherwise land
 * last and put the session back into the room the caller just left.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.tail.then(operation);
    // The next operation waits for this one to settle, whatever its outcome.
    this.tail = result.catch(() => undefined);
    return result;
  }
}
