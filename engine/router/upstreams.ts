/** Pod choice for the router: fewest requests in flight, ties broken round-robin. */
export class UpstreamSet {
  private readonly inFlight = new Map<string, number>();
  private turn = 0;

  constructor(readonly urls: readonly string[]) {
    for (const u of urls) this.inFlight.set(u, 0);
  }

  /** All pods, best first. */
  ranked(): string[] {
    const start = this.turn++ % this.urls.length;
    const rotated = [...this.urls.slice(start), ...this.urls.slice(0, start)];
    return rotated.sort((a, b) => (this.inFlight.get(a) ?? 0) - (this.inFlight.get(b) ?? 0));
  }

  async track<T>(url: string, fn: () => Promise<T>): Promise<T> {
    this.inFlight.set(url, (this.inFlight.get(url) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      this.inFlight.set(url, (this.inFlight.get(url) ?? 1) - 1);
    }
  }
}
