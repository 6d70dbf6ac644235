/**
 * `<pgw-job-progress job-id="…">`: a framework-free Custom Element that shows one job live, built
 * on the public client only.
 *
 * The page creates one `ProgressClient` and hands it to `defineJobProgressElement(client)`;
 * every element then watches its `job-id` through that client (one connection per page, however
 * many bars). An element watches while it is in the document: `connectedCallback` subscribes,
 * `disconnectedCallback` unsubscribes, and changing `job-id` re-subscribes.
 *
 * It shows a progress bar (`role="progressbar"`, `aria-valuenow`), the percent, stage and
 * message, the terminal state (succeeded with a result summary, failed with the error message,
 * cancelled) and a Cancel button while the job is not terminal. `data-status` on the element is
 * `idle` (no `job-id`), `loading` (no snapshot yet), the job's status, or `error` (the job
 * cannot be watched: not found, someone else's, not a job id), for styling and tests.
 *
 * Importing this module has no side effects and needs no DOM: the class is created inside
 * `defineJobProgressElement`, so the package still imports in Node.
 */

import type { ProgressClient } from "./client.js";
import { HttpError } from "./http.js";
import type { ErrorContext, JobSnapshot, JobStatus, JsonValue, State } from "./types.js";
import { isTerminal } from "./types.js";

/** What the element needs of a client (a `ProgressClient`, or a stand-in in tests). */
export type JobProgressClient = Pick<ProgressClient, "watch" | "cancel" | "on" | "state">;

/** The element's `data-status`. */
export type JobProgressStatus = "idle" | "loading" | "error" | JobStatus;

export interface JobProgressElementOptions {
  /** The line shown under a succeeded job (default: a short summary of `job.result`). */
  summarize?: (job: JobSnapshot) => string;
}

/** The element's own API, on top of `HTMLElement`. */
export interface JobProgressElement extends HTMLElement {
  /** The `job-id` attribute. */
  jobId: string | null;
  /** The newest snapshot shown, if any. */
  readonly job: JobSnapshot | undefined;
  /** `data-status`. */
  readonly status: JobProgressStatus;
}

export type JobProgressElementConstructor = new () => JobProgressElement;

const definedWith = new WeakMap<CustomElementConstructor, JobProgressClient>();

/**
 * Define `<tagName job-id="…">` on this page, watching jobs through `client`. Call it once per
 * page (again with the same client and tag: returns the same class). Throws outside a browser.
 */
export function defineJobProgressElement(
  client: JobProgressClient,
  tagName = "pgw-job-progress",
  options: JobProgressElementOptions = {},
): JobProgressElementConstructor {
  const { customElements: registry, HTMLElement: Base } = globalThis as Partial<typeof globalThis>;
  if (registry === undefined || Base === undefined) {
    throw new Error("defineJobProgressElement needs a browser: there is no customElements registry here");
  }
  const existing = registry.get(tagName);
  if (existing !== undefined) {
    if (definedWith.get(existing) === client) return existing as unknown as JobProgressElementConstructor;
    throw new Error(`<${tagName}> is already defined on this page (define it once, with the page's client)`);
  }
  const summarize = options.summarize ?? ((job: JobSnapshot) => summarizeResult(job.result));
  const element = createElementClass(Base, client, summarize);
  registry.define(tagName, element);
  definedWith.set(element, client);
  return element;
}

interface Parts {
  title: HTMLElement;
  status: HTMLElement;
  percent: HTMLElement;
  bar: HTMLElement;
  fill: HTMLElement;
  detail: HTMLElement;
  note: HTMLElement;
  cancel: HTMLButtonElement;
}

function createElementClass(
  Base: typeof HTMLElement,
  client: JobProgressClient,
  summarize: (job: JobSnapshot) => string,
): JobProgressElementConstructor {
  return class PgwJobProgress extends Base implements JobProgressElement {
    static readonly observedAttributes = ["job-id"];

    readonly #parts: Parts;
    #job: JobSnapshot | undefined = undefined;
    #unwatch: (() => void) | null = null;
    #offState: (() => void) | null = null;
    #cancelling = false;
    #cancelError: string | null = null;
    #connection: State = client.state;
    /** Between connectedCallback and disconnectedCallback (not `isConnected`: on an upgrade,
     * attributeChangedCallback runs in the document but before connectedCallback). */
    #attached = false;

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      root.innerHTML = TEMPLATE;
      const part = <T extends HTMLElement>(name: string): T => root.querySelector(`[part~="${name}"]`) as T;
      this.#parts = {
        title: part("title"),
        status: part("status"),
        percent: part("percent"),
        bar: part("bar"),
        fill: part("fill"),
        detail: part("detail"),
        note: part("note"),
        cancel: part<HTMLButtonElement>("cancel"),
      };
      this.#parts.cancel.addEventListener("click", () => void this.#cancel());
    }

    get jobId(): string | null {
      return this.getAttribute("job-id");
    }

    set jobId(id: string | null) {
      if (id === null) this.removeAttribute("job-id");
      else this.setAttribute("job-id", id);
    }

    get job(): JobSnapshot | undefined {
      return this.#job;
    }

    get status(): JobProgressStatus {
      return (this.dataset.status ?? "idle") as JobProgressStatus;
    }

    connectedCallback(): void {
      this.#attached = true;
      this.#offState ??= client.on("state", ({ state }) => {
        this.#connection = state;
        this.#renderNote();
      });
      this.#connection = client.state;
      this.#follow();
    }

    disconnectedCallback(): void {
      this.#attached = false;
      this.#unfollow();
      this.#offState?.();
      this.#offState = null;
    }

    attributeChangedCallback(_name: string, previous: string | null, value: string | null): void {
      if (previous === value || !this.#attached) return;
      this.#follow();
    }

    /** Watch the current `job-id` (and stop watching the previous one). */
    #follow(): void {
      this.#unfollow();
      const id = this.jobId;
      this.#job = undefined;
      this.#cancelling = false;
      this.#cancelError = null;
      if (id === null || id === "") {
        this.#renderEmpty("idle", "", "no job-id");
        return;
      }
      this.#renderEmpty("loading", "", "loading…");
      this.#unwatch = client.watch(
        id,
        (job) => {
          if (job.id === this.jobId) this.#render(job);
        },
        { onError: (error) => this.#renderError(id, error) },
      );
    }

    #unfollow(): void {
      this.#unwatch?.();
      this.#unwatch = null;
    }

    async #cancel(): Promise<void> {
      const id = this.jobId;
      if (id === null || this.#cancelling || (this.#job !== undefined && isTerminal(this.#job))) return;
      this.#cancelling = true;
      this.#cancelError = null;
      this.#renderControls();
      try {
        await client.cancel(id); // the cancelled snapshot reaches #render through the watch
      } catch (error) {
        if (id !== this.jobId) return;
        // 409: it ended first; its terminal snapshot is on its way. Anything else: say so.
        if (!(error instanceof HttpError && error.status === 409)) {
          this.#cancelling = false;
          this.#cancelError = `could not cancel: ${error instanceof Error ? error.message : String(error)}`;
        }
      }
      if (id === this.jobId) this.#renderControls();
    }

    // -- rendering -------------------------------------------------------------------------

    #render(job: JobSnapshot): void {
      this.#job = job;
      if (job.cancel_requested || isTerminal(job)) this.#cancelError = null; // it is on its way
      const { title, status, percent, bar, fill, detail } = this.#parts;
      const progress = Math.min(100, Math.max(0, Number.isFinite(job.progress) ? job.progress : 0));
      const shown = `${Math.floor(progress)}%`;
      this.dataset.status = job.status;
      title.textContent = `${job.kind} · ${job.id.slice(0, 8)}`;
      title.title = job.id;
      status.textContent = job.cancel_requested && !isTerminal(job) ? "cancelling" : job.status;
      percent.textContent = shown;
      fill.style.width = `${progress}%`;
      bar.setAttribute("aria-valuenow", String(Math.round(progress * 10) / 10));
      bar.setAttribute("aria-valuetext", job.message ? `${shown}, ${job.message}` : shown);
      detail.textContent = describe(job, summarize);
      this.#renderControls();
    }

    /** No snapshot to show: `idle` (no job-id), `loading`, or `error` (cannot be watched). */
    #renderEmpty(state: "idle" | "loading" | "error", label: string, text: string): void {
      const { title, status, percent, bar, fill, detail } = this.#parts;
      this.dataset.status = state;
      title.textContent = this.jobId ?? "";
      title.title = this.jobId ?? "";
      status.textContent = label;
      percent.textContent = "";
      fill.style.width = "0%";
      bar.removeAttribute("aria-valuenow"); // indeterminate: nothing known yet
      bar.removeAttribute("aria-valuetext");
      detail.textContent = text;
      this.#renderControls();
    }

    #renderError(id: string, error: ErrorContext): void {
      if (id !== this.jobId) return;
      this.#unwatch = null; // the watch has ended
      this.#renderEmpty("error", error.code, error.message);
    }

    #renderControls(): void {
      const { cancel } = this.#parts;
      const status = this.dataset.status;
      const live = status === "loading" || status === "queued" || status === "running";
      cancel.hidden = !live || this.jobId === null;
      cancel.disabled = this.#cancelling || this.#job?.cancel_requested === true;
      cancel.textContent = cancel.disabled ? "Cancelling…" : "Cancel";
      this.#renderNote();
    }

    #renderNote(): void {
      const { note } = this.#parts;
      const job = this.#job;
      const live = job === undefined ? this.dataset.status === "loading" : !isTerminal(job);
      let text = this.#cancelError ?? "";
      if (text === "" && live && this.#connection === "reconnecting") text = "reconnecting…";
      note.textContent = text;
      note.hidden = text === "";
    }
  };
}

/** The line under the bar: stage and message while it runs, the outcome once it ended. */
function describe(job: JobSnapshot, summarize: (job: JobSnapshot) => string): string {
  switch (job.status) {
    case "succeeded":
      return summarize(job);
    case "failed":
      return job.error?.message ?? job.message ?? "failed";
    case "cancelled":
      return job.error?.message ?? job.message ?? "cancelled";
    default: {
      const text = [job.stage, job.message].filter((part) => part !== null && part !== "").join(": ");
      return text || (job.status === "queued" ? "waiting to start" : "");
    }
  }
}

/** `steps 20 · bytes_in 5242880 · sha256 3f2a9c1d0b7e…`: the scalar fields of a result, short. */
export function summarizeResult(result: JsonValue | undefined): string {
  if (result === null || result === undefined) return "done";
  if (typeof result !== "object") return shorten(String(result), 80);
  if (Array.isArray(result)) return `${result.length} ${result.length === 1 ? "item" : "items"}`;
  const fields = Object.entries(result)
    .filter(([, value]) => value === null || typeof value !== "object")
    .slice(0, 5)
    .map(([name, value]) => `${name} ${shorten(String(value), 16)}`);
  return fields.length > 0 ? fields.join(" · ") : "done";
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 4)}…`;
}

const TEMPLATE = `
<style>
  :host {
    display: block;
    --pgw-accent: #2563eb;
    --pgw-success: #15803d;
    --pgw-danger: #b91c1c;
    --pgw-muted: #6b7280;
    --pgw-track: #e5e7eb;
  }
  :host([hidden]) { display: none; }
  .row { display: flex; align-items: center; gap: 0.5em; }
  [part~="title"] { flex: 1; min-width: 0; font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  [part~="status"] { color: var(--pgw-muted); font-size: 0.875em; }
  [part~="percent"] { min-width: 3.5ch; text-align: right; font-variant-numeric: tabular-nums; }
  [part~="cancel"] { font: inherit; font-size: 0.8em; padding: 0.1em 0.6em; cursor: pointer; }
  [part~="cancel"]:disabled { cursor: default; }
  [part~="bar"] { height: 0.5rem; margin: 0.35rem 0; border-radius: 0.25rem; background: var(--pgw-track); overflow: hidden; }
  [part~="fill"] { height: 100%; width: 0; background: var(--pgw-accent); transition: width 0.25s ease-out; }
  [part~="detail"], [part~="note"] { font-size: 0.875em; color: var(--pgw-muted); overflow-wrap: anywhere; }
  [part~="note"] { font-style: italic; }
  :host([data-status="succeeded"]) [part~="fill"] { background: var(--pgw-success); }
  :host([data-status="succeeded"]) [part~="status"] { color: var(--pgw-success); }
  :host([data-status="failed"]) [part~="fill"],
  :host([data-status="error"]) [part~="fill"] { background: var(--pgw-danger); }
  :host([data-status="failed"]) :is([part~="status"], [part~="detail"]),
  :host([data-status="error"]) :is([part~="status"], [part~="detail"]) { color: var(--pgw-danger); }
  :host([data-status="cancelled"]) [part~="fill"] { background: var(--pgw-muted); }
  [hidden] { display: none !important; }
  @media (prefers-reduced-motion: reduce) { [part~="fill"] { transition: none; } }
</style>
<div class="row">
  <span part="title" id="title"></span>
  <span part="status" aria-live="polite"></span>
  <span part="percent"></span>
  <button part="cancel" type="button" hidden>Cancel</button>
</div>
<div part="bar" role="progressbar" aria-labelledby="title" aria-valuemin="0" aria-valuemax="100"><div part="fill"></div></div>
<div part="detail"></div>
<div part="note" hidden></div>
`;
