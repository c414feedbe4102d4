// The typed control flow a phase can end in: a reboot request (not a failure) and a failure with its remedy.

/** A phase that needs a fresh boot (new table, new firmware): logged, synced, then reboot(2). */
export class RebootRequest extends Error {
  /** restartArg: reboot with LINUX_REBOOT_CMD_RESTART2 and this argument (the Pi firmware's "0 tryboot"). */
  constructor(
    readonly reason: string,
    readonly restartArg?: string,
  ) {
    super(reason);
  }
}

/** A failure with what the admin should do about it. */
export class PhaseFailure extends Error {
  constructor(
    message: string,
    readonly remedy: string,
    readonly ledCode: string = 'error',
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
