import type { TokenProvider } from "./types.js";

/**
 * The current token, refreshed on demand. A string never changes; a function is called for the
 * first token and again after the gateway rejected one (4401, HTTP 401). Concurrent refreshes
 * share one call.
 */
export class TokenSource {
  private current: string | null;
  private pending: Promise<string> | null = null;
  /** +1 each time the provider gave a token: tells a caller whether a refresh happened. */
  version = 0;

  constructor(private readonly provider: TokenProvider) {
    this.current = typeof provider === "string" ? provider : null;
  }

  /** Whether `refresh()` can return a different token. */
  get refreshable(): boolean {
    return typeof this.provider === "function";
  }

  async get(): Promise<string> {
    return this.current ?? this.refresh();
  }

  /** Ask the provider for a new token (a string provider returns the same one). */
  refresh(): Promise<string> {
    const provider = this.provider;
    if (typeof provider === "string") return Promise.resolve(provider);
    if (this.pending === null) {
      this.pending = (async () => {
        try {
          const token = await provider();
          if (typeof token !== "string" || token === "") {
            throw new TypeError("the token function must return a non-empty string");
          }
          this.current = token;
          this.version += 1;
          return token;
        } finally {
          this.pending = null;
        }
      })();
    }
    return this.pending;
  }
}
