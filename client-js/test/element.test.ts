/**
 * `<pgw-job-progress>` on its own: in Node (importing the package must not need a DOM), and in
 * Chromium with a scripted stand-in for the client, so every rendering and every watch/unwatch
 * call can be checked exactly. The element against a real gateway is in browser.test.ts.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser, Page } from "playwright-core";
import * as pgw from "../src/index.js";
import { launchBrowser, screenshot } from "./support/browser.js";
import { REPO_ROOT } from "./support/processes.js";

test("in Node the package imports, and defining the element says it needs a browser", () => {
  assert.equal(typeof pgw.defineJobProgressElement, "function");
  assert.equal(typeof (globalThis as { HTMLElement?: unknown }).HTMLElement, "undefined");
  const client = new pgw.ProgressClient({ url: "http://127.0.0.1:9", token: "t", autoConnect: false });
  assert.throws(() => pgw.defineJobProgressElement(client), /needs a browser/);
});

test("summarizeResult: the scalar fields of a result, short", () => {
  assert.equal(pgw.summarizeResult(null), "done");
  assert.equal(pgw.summarizeResult("s3://bucket/out.csv"), "s3://bucket/out.csv");
  assert.equal(pgw.summarizeResult([1, 2]), "2 items");
  assert.equal(
    pgw.summarizeResult({ steps: 3, sha256: "abcdef0123456789abcdef", nested: { a: 1 }, ok: true }),
    "steps 3 · sha256 abcdef012345… · ok true",
  );
  assert.equal(pgw.summarizeResult({ nested: { a: 1 } }), "done");
});

// -- in Chromium, with a stand-in client ----------------------------------------------------

const ORIGIN = "http://element.test";
const BUNDLE = join(REPO_ROOT, "client-js", "dist", "progress-gateway.js");

/** The page: the bundle, and `FakeClient` that records calls and lets the test push snapshots. */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<style>body { font-family: sans-serif; max-width: 40rem; margin: 1rem auto; } pgw-job-progress { margin: 1rem 0; }</style>
<main id="host"></main>
<script type="module">
  import * as pgw from "/client/progress-gateway.js";

  class FakeClient extends EventTarget {
    state = "open";
    calls = [];
    watches = new Map();
    cancelError = null;
    watch(id, listener, options = {}) {
      this.calls.push("watch " + id);
      this.watches.set(id, { listener, options });
      return () => {
        this.calls.push("unwatch " + id);
        this.watches.delete(id);
      };
    }
    on(type, listener) {
      const wrapped = (event) => listener(event.detail);
      this.addEventListener(type, wrapped);
      return () => this.removeEventListener(type, wrapped);
    }
    async cancel(id) {
      this.calls.push("cancel " + id);
      if (this.cancelError) throw this.cancelError;
      return null;
    }
    setState(state) {
      const previous = this.state;
      this.state = state;
      this.dispatchEvent(new CustomEvent("state", { detail: { state, previous, transport: "websocket", attempt: 1 } }));
    }
    push(id, fields) {
      const job = {
        id, owner: "demo", kind: "demo", status: "running", progress: 0, stage: null, message: null,
        seq: 1, attempt: 1, created_at: "", updated_at: "", heartbeat_at: "", executor: "local",
        call_id: null, params: {}, result: null, error: null, cancel_requested: false, ...fields,
      };
      this.watches.get(id)?.listener(job);
    }
    fail(id, error) {
      const watch = this.watches.get(id);
      this.watches.delete(id);
      watch?.options.onError?.(error);
    }
  }

  const client = new FakeClient();
  pgw.defineJobProgressElement(client);
  function add(id) {
    const element = document.createElement("pgw-job-progress");
    if (id !== null) element.setAttribute("job-id", id);
    document.querySelector("#host").append(element);
    return element;
  }
  function view(element) {
    const root = element.shadowRoot;
    const part = (name) => root.querySelector('[part~="' + name + '"]');
    const bar = part("bar");
    return {
      status: element.dataset.status,
      valuenow: bar.getAttribute("aria-valuenow"),
      valuetext: bar.getAttribute("aria-valuetext"),
      role: bar.getAttribute("role"),
      width: part("fill").style.width,
      title: part("title").textContent,
      label: part("status").textContent,
      percent: part("percent").textContent,
      detail: part("detail").textContent,
      note: part("note").hidden ? null : part("note").textContent,
      cancel: part("cancel").hidden ? "hidden" : part("cancel").disabled ? "disabled" : "enabled",
    };
  }
  Object.assign(globalThis, { pgw, client, add, view, ready: true });
</script>`;

let browser: Browser;
let page: Page;

before(async () => {
  browser = await launchBrowser();
  page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  // A made-up origin answered by the test: no server, and no request leaves the browser.
  await page.route(`${ORIGIN}/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === "/client/progress-gateway.js") {
      return route.fulfill({ contentType: "text/javascript", body: readFileSync(BUNDLE, "utf8") });
    }
    return route.fulfill({ contentType: "text/html", body: PAGE });
  });
  await page.goto(`${ORIGIN}/`);
  await page.waitForFunction(() => (globalThis as { ready?: boolean }).ready === true);
  assert.deepEqual(errors, []);
});

after(async () => {
  if (page) await screenshot(page, "element-states").catch(() => undefined);
  await browser?.close();
});

type View = Record<string, string | null>;

/** Run `script` in the page (it sees `client`, `add`, `view`, `pgw` and `el`, the element named). */
function run<T = View>(script: string): Promise<T> {
  return page.evaluate(script) as Promise<T>;
}

test("watch on connect, re-watch when job-id changes, unwatch on disconnect", async () => {
  await run(`globalThis.el = add("job-a"); client.calls.length = 0; null`);
  await run(
    `el.remove(); el.setAttribute("job-id", "job-a"); document.querySelector("#host").append(el); null`,
  );
  assert.deepEqual(await run("client.calls"), ["unwatch job-a", "watch job-a"]);

  const loading = await run("view(el)");
  assert.equal(loading.status, "loading");
  assert.equal(loading.valuenow, null, "indeterminate until the first snapshot");
  assert.equal(loading.role, "progressbar");
  assert.equal(loading.cancel, "enabled");

  await run(`el.setAttribute("job-id", "job-b"); null`);
  assert.deepEqual(await run("client.calls.slice(2)"), ["unwatch job-a", "watch job-b"]);
  await run(`el.setAttribute("job-id", "job-b"); el.jobId = "job-b"; null`);
  assert.equal((await run<string[]>("client.calls")).length, 4, "the same id again does nothing");

  await run(
    `client.push("job-b", { progress: 37.5, seq: 3, stage: "compressing", message: "step 3 of 8" }); null`,
  );
  const running = await run("view(el)");
  assert.deepEqual(
    [running.status, running.valuenow, running.percent, running.width, running.label, running.detail],
    ["running", "37.5", "37%", "37.5%", "running", "compressing: step 3 of 8"],
  );
  assert.equal(running.valuetext, "37%, step 3 of 8");
  assert.match(running.title ?? "", /^demo · job-b/);
  assert.equal(await run("el.job.seq"), 3);

  await run(`el.remove(); null`);
  assert.equal((await run<string[]>("client.calls")).at(-1), "unwatch job-b");
  await run(`el.jobId = null; document.querySelector("#host").append(el); null`);
  assert.equal((await run("view(el)")).status, "idle");
  assert.equal((await run<string[]>("client.calls")).at(-1), "unwatch job-b", "no job-id: nothing watched");
});

test("an element in the page before the tag is defined is upgraded and watches once", async () => {
  const calls = await run<string[]>(`
    document.querySelector("#host").insertAdjacentHTML("beforeend", '<pgw-upgraded job-id="job-u"></pgw-upgraded>');
    client.calls.length = 0;
    pgw.defineJobProgressElement(client, "pgw-upgraded");
    client.calls`);
  assert.deepEqual(calls, ["watch job-u"]);
  assert.equal(await run("document.querySelector('pgw-upgraded').dataset.status"), "loading");
  await run(`document.querySelector('pgw-upgraded').remove(); null`);
  assert.deepEqual(await run("client.calls"), ["watch job-u", "unwatch job-u"]);
});

test("terminal states: a result summary, the error message, cancelled; no Cancel button", async () => {
  await run(`
    globalThis.done = add("job-ok");
    globalThis.bad = add("job-bad");
    globalThis.stopped = add("job-stopped");
    client.push("job-ok", { status: "succeeded", progress: 100, seq: 9, result: { steps: 8, sha256: "0123456789abcdef0123" } });
    client.push("job-bad", { status: "failed", progress: 20, seq: 4, error: { code: "worker_error", message: "DemoFailure: failed at step 3" } });
    client.push("job-stopped", { status: "cancelled", progress: 10, seq: 5, error: { code: "cancelled", message: "cancelled at step 2 of 20" } });
    null`);
  const [ok, bad, stopped] = await run<View[]>("[view(done), view(bad), view(stopped)]");
  assert.deepEqual(
    [ok?.status, ok?.valuenow, ok?.label, ok?.detail, ok?.cancel],
    ["succeeded", "100", "succeeded", "steps 8 · sha256 0123456789ab…", "hidden"],
  );
  assert.deepEqual(
    [bad?.status, bad?.valuenow, bad?.detail, bad?.cancel],
    ["failed", "20", "DemoFailure: failed at step 3", "hidden"],
  );
  assert.deepEqual(
    [stopped?.status, stopped?.label, stopped?.detail, stopped?.cancel],
    ["cancelled", "cancelled", "cancelled at step 2 of 20", "hidden"],
  );
});

test("a job that cannot be watched says why", async () => {
  await run(`globalThis.missing = add("job-missing");
    client.fail("job-missing", { code: "not_found", message: "job job-missing not found", jobId: "job-missing" }); null`);
  const missing = await run("view(missing)");
  assert.deepEqual(
    [missing.status, missing.label, missing.detail, missing.cancel, missing.valuenow],
    ["error", "not_found", "job job-missing not found", "hidden", null],
  );
});

test("Cancel: calls the client, waits for the cancelled snapshot; a 409 is not an error, a 503 is", async () => {
  await run(`globalThis.one = add("job-c1"); client.push("job-c1", { progress: 5, seq: 2 });
    client.cancelError = new pgw.HttpError(409, "job_finished", "the job already ended"); null`);
  await page.locator('pgw-job-progress[job-id="job-c1"] [part~="cancel"]').click();
  assert.equal((await run<string[]>("client.calls")).at(-1), "cancel job-c1");
  let view = await run("view(one)");
  assert.deepEqual([view.cancel, view.note], ["disabled", null]);
  await run(`client.push("job-c1", { status: "cancelled", progress: 5, seq: 3 }); null`);
  view = await run("view(one)");
  assert.deepEqual([view.status, view.cancel, view.detail], ["cancelled", "hidden", "cancelled"]);

  await run(`globalThis.two = add("job-c2"); client.push("job-c2", { progress: 5, seq: 2 });
    client.cancelError = new pgw.HttpError(503, "store_unavailable", "the store is unavailable", 2); null`);
  await page.locator('pgw-job-progress[job-id="job-c2"] [part~="cancel"]').click();
  await page.waitForFunction(() => {
    const element = document.querySelector('pgw-job-progress[job-id="job-c2"]');
    return element?.shadowRoot?.querySelector('[part~="note"]')?.textContent?.startsWith("could not cancel");
  });
  view = await run("view(two)");
  assert.deepEqual(
    [view.status, view.cancel, view.note],
    ["running", "enabled", "could not cancel: the store is unavailable"],
  );

  // cancel_requested (another tab asked): the button shows it is on its way.
  await run(`client.push("job-c2", { progress: 6, seq: 3, cancel_requested: true }); null`);
  view = await run("view(two)");
  assert.deepEqual([view.label, view.cancel, view.note], ["cancelling", "disabled", null]);
});

test("a reconnecting client shows a hint on live jobs only", async () => {
  await run(`globalThis.live = add("job-live"); client.push("job-live", { progress: 50, seq: 2 });
    globalThis.finished = add("job-finished"); client.push("job-finished", { status: "succeeded", progress: 100, seq: 7 });
    null`);
  await run(`client.setState("reconnecting"); null`);
  assert.equal((await run("view(live)")).note, "reconnecting…");
  assert.equal((await run("view(finished)")).note, null, "a finished job needs no connection");
  await run(`client.setState("open"); null`);
  assert.equal((await run("view(live)")).note, null);
});
