// errors.ts: the error classes of the public API beyond option errors (lib/validate.ts).
// Contract: every message names the object or device concerned and what went wrong.

// Thrown (or, for Promise-returning methods, rejected) when an object that held native memory
// is used after dispose().
export class DisposedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DisposedError';
  }
}

// A device that was asked for by name could not be used; `reason` is the loader's report
// (every path tried and why it failed).
export class DeviceError extends Error {
  readonly device: string;
  readonly reason: string;
  constructor(device: string, reason: string) {
    super(reason.startsWith(`device '${device}'`) ? reason : `device '${device}' is not available: ${reason}`);
    this.name = 'DeviceError';
    this.device = device;
    this.reason = reason;
  }
}

// A failed load of the native addon byol.node; the message lists what was tried and the fixes.
export class NativeLoadError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'NativeLoadError';
  }
}
