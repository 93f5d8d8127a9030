import cliProgress from "cli-progress";
import { errColors as pc } from "./color.js";
import type { ProgressEvent } from "../sdk/types.js";

const PULL_PHASES = ["kernel", "rootfs", "image", "initramfs", "done"];

/**
 * Progress on stderr, only when stderr is a terminal (or PYRO_PROGRESS=1), so
 * programs reading pyro's output never see it. Environment builds get a bar,
 * other phases a short line each.
 */
export class Progress {
  private bar: cliProgress.SingleBar | undefined;
  private readonly started = Date.now();
  readonly enabled: boolean;

  constructor(enabled = process.stderr.isTTY === true || process.env.PYRO_PROGRESS === "1") {
    this.enabled = enabled;
  }

  readonly onProgress = (event: ProgressEvent): void => {
    if (!this.enabled) return;
    const step = PULL_PHASES.indexOf(event.phase);
    if (step >= 0 && process.stderr.isTTY) {
      if (!this.bar) {
        this.bar = new cliProgress.SingleBar(
          { format: `${pc.cyan("pyro")} [{bar}] {value}/{total} {message} ({elapsed}s)`, stream: process.stderr, hideCursor: true, clearOnComplete: false },
          cliProgress.Presets.shades_classic,
        );
        this.bar.start(PULL_PHASES.length, 0, { message: "", elapsed: "0" });
      }
      this.bar.update(step + (event.phase === "done" ? 1 : 0), { message: event.message, elapsed: this.elapsed() });
      if (event.phase === "done") this.stop();
      return;
    }
    this.stop();
    process.stderr.write(`${pc.cyan("pyro")} ${pc.dim(`${this.elapsed()}s`)} ${event.message}\n`);
  };

  private elapsed(): string {
    return ((Date.now() - this.started) / 1000).toFixed(1);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
