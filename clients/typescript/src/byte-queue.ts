/**
 * A FIFO of bytes made of the chunks pushed into it: reads and discards cut across chunk borders
 * without copying the whole backlog, so odd-sized chunks cost nothing extra.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Bytes of chunks[0] already consumed. */
  private offset = 0;
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.total += chunk.length;
    }
  }

  /** Removes and returns the first `n` bytes (all of them when fewer are queued). */
  read(n: number): Buffer {
    const size = Math.min(Math.max(0, Math.floor(n)), this.total);
    const out = Buffer.allocUnsafe(size);
    let written = 0;
    while (written < size) {
      const head = this.chunks[0];
      if (head === undefined) {
        break;
      }
      const take = Math.min(head.length - this.offset, size - written);
      head.copy(out, written, this.offset, this.offset + take);
      written += take;
      this.consumeHead(take, head.length);
    }
    this.total -= written;
    return out;
  }

  /** Drops the first `n` bytes (all of them when fewer are queued); returns how many were dropped. */
  discard(n: number): number {
    const size = Math.min(Math.max(0, Math.floor(n)), this.total);
    let left = size;
    while (left > 0) {
      const head = this.chunks[0];
      if (head === undefined) {
        break;
      }
      const take = Math.min(head.length - this.offset, left);
      left -= take;
      this.consumeHead(take, head.length);
    }
    this.total -= size - left;
    return size - left;
  }

  clear(): void {
    this.chunks = [];
    this.offset = 0;
    this.total = 0;
  }

  private consumeHead(taken: number, headLength: number): void {
    this.offset += taken;
    if (this.offset === headLength) {
      this.chunks.shift();
      this.offset = 0;
    }
  }
}
