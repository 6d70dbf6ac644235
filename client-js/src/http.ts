/**
 * The HTTP API (docs/design.md §6) as the client uses it: authenticated requests, one token refresh on
 * 401, and problem+json bodies turned into `HttpError`.
 */

import type { TokenSource } from "./token.js";
import type { ActiveJobs, FetchLike, JobSnapshot, JsonValue } from "./types.js";

/** A non-2xx answer of the gateway, or no answer at all (`status` 0). */
export class HttpError extends Error {
  override readonly name = "HttpError";

  constructor(
    /** HTTP status; 0 when the request never got an answer. */
    readonly status: number,
    /** The problem's `code` (`not_found`, `forbidden`, …), or `network` when there was no answer. */
    readonly code: string,
    message: string,
    /** Seconds from `Retry-After`, when the gateway sent one. */
    readonly retryAfterS: number | null = null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Whether the same request may succeed later (store outage, rate limit, no answer). */
  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

export interface RequestOptions {
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  /** A JSON body (sent with `Content-Type: application/json`). */
  json?: unknown;
  signal?: AbortSignal;
  /** How long to wait for the answer's headers, in ms (the client's `requestTimeoutMs`). */
  timeoutMs?: number;
}

export class HttpApi {
  /** The gateway's base URL, ending in `/` so a path prefix (`https://host/pgw/`) is kept. */
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly fetchImpl: FetchLike,
    private readonly tokens: TokenSource,
    /** How long a request may go unanswered, in ms (`requestTimeoutMs`). */
    readonly timeoutMs = 30_000,
  ) {
    this.baseUrl = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
  }

  /** Absolute URL of an API path (`/exports/…`), below the base URL's own path. */
  url(path: string, query: Record<string, string> = {}): string {
    const url = new URL(path.replace(/^\/+/, ""), this.baseUrl);
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    return url.toString();
  }

  /**
   * Send an authenticated request; on 401 get a fresh token and send it once more. Answers
   * 2xx and 304 as they are, everything else as `HttpError`.
   */
  async request(path: string, options: RequestOptions = {}): Promise<Response> {
    let response = await this.send(path, await this.tokens.get(), options);
    if (response.status === 401 && this.tokens.refreshable) {
      await discard(response);
      response = await this.send(path, await this.tokens.refresh(), options);
    }
    if (response.ok || response.status === 304) return response;
    throw await problem(response);
  }

  async get(id: string): Promise<JobSnapshot> {
    const response = await this.request(jobPath(id));
    return (await response.json()) as JobSnapshot;
  }

  async active(): Promise<ActiveJobs> {
    const response = await this.request("/exports/active");
    const body = (await response.json()) as Partial<ActiveJobs>;
    return { active: body.active ?? [], recent: body.recent ?? [] };
  }

  /** `POST /exports`: create a job of `kind` and start it; 201 → its first snapshot. */
  async create(kind: string, params: { [key: string]: JsonValue }): Promise<JobSnapshot> {
    const response = await this.request("/exports", { method: "POST", json: { kind, params } });
    return (await response.json()) as JobSnapshot;
  }

  async cancel(id: string): Promise<JobSnapshot> {
    const response = await this.request(`${jobPath(id)}/cancel`, { method: "POST" });
    return (await response.json()) as JobSnapshot;
  }

  /** `GET /healthz` without a token: is the gateway reachable over plain HTTP at all? */
  async reachable(signal?: AbortSignal): Promise<boolean> {
    try {
      const response = await this.fetchWithin(this.url("/healthz"), {}, signal, this.timeoutMs);
      await discard(response);
      return response.ok;
    } catch (error) {
      if (isAbort(error)) throw error;
      return false;
    }
  }

  private async send(path: string, token: string, options: RequestOptions): Promise<Response> {
    const headers: Record<string, string> = {
      ...options.headers,
      Authorization: `Bearer ${token}`,
      Accept: "application/json",
    };
    const init: RequestInit = { method: options.method ?? "GET", headers };
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    }
    try {
      return await this.fetchWithin(
        this.url(path),
        init,
        options.signal,
        options.timeoutMs ?? this.timeoutMs,
      );
    } catch (error) {
      if (isAbort(error)) throw error;
      const why = error instanceof RequestTimeout ? error.message : "no answer from the gateway";
      throw new HttpError(0, "network", `${init.method} ${path}: ${why}`, null, { cause: error });
    }
  }

  /**
   * `fetch` that gives up when the answer's headers take longer than `timeoutMs` (throwing
   * `RequestTimeout`, not an abort: the caller did not ask to stop). The caller's `signal`
   * still aborts it.
   */
  private async fetchWithin(
    url: string,
    init: RequestInit,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<Response> {
    const controller = new AbortController();
    const callerAborted = (): void => controller.abort(signal?.reason);
    if (signal?.aborted) callerAborted();
    signal?.addEventListener("abort", callerAborted, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    try {
      return await this.fetchImpl(url, { ...init, signal: controller.signal });
    } catch (error) {
      if (timedOut) throw new RequestTimeout(`no answer within ${timeoutMs} ms`, { cause: error });
      throw error;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", callerAborted);
    }
  }
}

class RequestTimeout extends Error {
  override readonly name = "RequestTimeout";
}

export function jobPath(id: string): string {
  return `/exports/${encodeURIComponent(id)}`;
}

export function isAbort(error: unknown): boolean {
  return error instanceof Error && error.name === "AbortError";
}

async function problem(response: Response): Promise<HttpError> {
  let code = `http_${response.status}`;
  let detail = response.statusText || `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { code?: unknown; detail?: unknown };
    if (typeof body.code === "string") code = body.code;
    if (typeof body.detail === "string") detail = body.detail;
  } catch (error) {
    // Not problem+json (a proxy's error page): the status alone says what happened.
    detail = `${detail} (body is not problem+json: ${String(error)})`;
  }
  const retryAfter = Number(response.headers.get("retry-after"));
  return new HttpError(
    response.status,
    code,
    detail,
    Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
  );
}

async function discard(response: Response): Promise<void> {
  if (response.body) await response.body.cancel();
}
