/** A progress bar on stderr: redrawn in place on a terminal, a line every 25% otherwise. */
export interface Progress {
  update(done: number): void;
  finish(): void;
}

const MiB = 1024 * 1024;

export function progressBar(label: string, total: number, out: NodeJS.WriteStream = process.stderr): Progress {
  let lastQuarter = -1;
  const render = (done: number): string => {
    const ratio = total > 0 ? Math.min(1, done / total) : 1;
    const width = 30;
    const filled = Math.round(ratio * width);
    const bar = "#".repeat(filled) + " ".repeat(width - filled);
    return `${label} [${bar}] ${(ratio * 100).toFixed(0)}% ${(done / MiB).toFixed(1)}/${(total / MiB).toFixed(1)} MiB`;
  };
  return {
    update(done: number): void {
      if (out.isTTY) {
        out.write(`\r${render(done)}`);
        return;
      }
      const quarter = Math.floor((done / Math.max(1, total)) * 4);
      if (quarter !== lastQuarter) {
        lastQuarter = quarter;
        out.write(`${render(done)}\n`);
      }
    },
    finish(): void {
      if (out.isTTY) out.write("\n");
    },
  };
}
