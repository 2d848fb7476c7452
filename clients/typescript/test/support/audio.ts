/** Test signals: sine tones as 16-bit PCM, WAV files, and cutting PCM into chunks. */
import { writeFileSync } from "node:fs";

/** A mono s16le sine of `freq` Hz, `seconds` long at `rate`, peak `amplitude` of full scale. */
export function sine(freq: number, seconds: number, rate: number, amplitude = 0.5): Buffer {
  const count = Math.round(seconds * rate);
  const out = Buffer.alloc(count * 2);
  for (let i = 0; i < count; i++) {
    out.writeInt16LE(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * freq * i) / rate)), i * 2);
  }
  return out;
}

/** RMS of a full-scale-`amplitude` sine in sample units: what an undistorted tone measures. */
export function sineRms(amplitude = 0.5): number {
  return (amplitude * 32767) / Math.SQRT2;
}

/** Writes mono s16le `pcm` at `rate` as a WAV file. */
export function writeWav(file: string, pcm: Buffer, rate: number): void {
  const header = Buffer.alloc(44);
  header.write("RIFF", 0, "ascii");
  header.writeUInt32LE(36 + pcm.length, 4);
  header.write("WAVE", 8, "ascii");
  header.write("fmt ", 12, "ascii");
  header.writeUInt32LE(16, 16); // fmt chunk size
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28); // byte rate
  header.writeUInt16LE(2, 32); // block align
  header.writeUInt16LE(16, 34); // bits per sample
  header.write("data", 36, "ascii");
  header.writeUInt32LE(pcm.length, 40);
  writeFileSync(file, Buffer.concat([header, pcm]));
}

/** `pcm` cut into chunks of `bytes` (the last may be shorter). */
export function chunks(pcm: Buffer, bytes: number): Buffer[] {
  const out: Buffer[] = [];
  for (let offset = 0; offset < pcm.length; offset += bytes) {
    out.push(pcm.subarray(offset, Math.min(offset + bytes, pcm.length)));
  }
  return out;
}
