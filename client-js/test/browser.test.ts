/**
 * The demo page and `<pgw-job-progress>` in a real browser (Debian's Chromium through
 * playwright-core) against a real `progress-gateway demo`: jobs run in local processes, the page
 * uses the public client from `/client/progress-gateway.js`. Each test has its own gateway and
 * SQLite file. Waits are conditions with deadlines (`waitForFunction`, locators), never sleeps.
 * Each test leaves a screenshot of its final state in `test-output/browser/`.
 */

import assert from "node:assert/strict";
import { after, before, test, type TestContext } from "node:test";
import type { Browser, ElementHandle, Page } from "playwright-core";
import type { JobSnapshot } from "../src/types.js";
import { DemoGateway, launchBrowser, screenshot } from "./support/browser.js";
import { mintToken } from "./support/processes.js";
import { BlockingProxy } from "./support/proxy.js";

let browser: Browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

interface Session {
  gateway: DemoGateway;
  page: Page;
  /** Uncaught exceptions in the page (each test asserts there were none). */
  pageErrors: string[];
}

/**
 * Run `body` with a fresh gateway and a fresh browser context; screenshot the final state
 * (also when the test fails), then tear everything down.
 */
async function withDemo(
  t: TestContext,
  name: string,
  body: (session: Session) => Promise<void>,
): Promise<void> {
  const gateway = new DemoGateway(name);
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  const consoleErrors: string[] = []; // expected ones too (a refused WebSocket): shown on failure
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.setDefaultTimeout(20_000);
  try {
    await gateway.start();
    await body({ gateway, page, pageErrors });
    assert.deepEqual(pageErrors, [], "uncaught errors in the page");
  } catch (error) {
    t.diagnostic(`browser console errors:\n${consoleErrors.join("\n")}`);
    t.diagnostic(`gateway log:\n${gateway.log()}`);
    throw error;
  } finally {
    const path = await screenshot(page, name).catch((error: unknown) => `(no screenshot: ${String(error)})`);
    t.diagnostic(`screenshot: ${path}`);
    await context.close();
    await gateway.close();
  }
}

// -- page helpers ---------------------------------------------------------------------------

function bar(page: Page, id: string): ReturnType<Page["locator"]> {
  return page.locator(`pgw-job-progress[job-id="${id}"]`);
}

/** Wait until the job's bar has `data-status="<status>"`. */
async function waitForStatus(page: Page, id: string, status: string): Promise<void> {
  await page.locator(`pgw-job-progress[job-id="${id}"][data-status="${status}"]`).waitFor();
}

/** Wait until the connection display says `state` (and `transport`, if given). */
async function waitForConnection(page: Page, state: string, transport?: string): Promise<void> {
  const selector = `#connection[data-state="${state}"]${transport ? `[data-transport="${transport}"]` : ""}`;
  await page.locator(selector).waitFor();
}

/** Fill the form, press Start, and return the new job's id. */
async function startExport(
  page: Page,
  params: { steps: number; step_s: number; fail_at_step?: number },
): Promise<string> {
  await page.fill('input[name="steps"]', String(params.steps));
  await page.fill('input[name="step_s"]', String(params.step_s));
  await page.fill(
    'input[name="fail_at_step"]',
    params.fail_at_step === undefined ? "" : String(params.fail_at_step),
  );
  await page.click('#start button[type="submit"]');
  const id = await page.locator("#form-status[data-job-id]").getAttribute("data-job-id");
  assert.ok(id, "the form says which job it started");
  return id;
}

/** Wait until the bar's `aria-valuenow` is above `than`; returns the value seen. */
async function progressAbove(page: Page, id: string, than: number): Promise<number> {
  const handle = await page.waitForFunction(
    ({ id, than }) => {
      const element = document.querySelector(`pgw-job-progress[job-id="${id}"]`);
      const value = element?.shadowRoot?.querySelector('[role="progressbar"]')?.getAttribute("aria-valuenow");
      return value !== null && value !== undefined && Number(value) > than ? Number(value) : null;
    },
    { id, than },
  );
  return (await handle.jsonValue()) as number;
}

/**
 * Record every `aria-valuenow` the bar shows from now on (in the page, so nothing is missed
 * between two polls); `recorded()` returns them.
 */
async function recordProgress(element: ElementHandle<Element>): Promise<() => Promise<number[]>> {
  await element.evaluate((host) => {
    const progressbar = host.shadowRoot?.querySelector('[role="progressbar"]');
    if (!progressbar) throw new Error("no progressbar in the shadow root");
    const values: number[] = [];
    (host as unknown as { recorded: number[] }).recorded = values;
    new MutationObserver(() => {
      const value = progressbar.getAttribute("aria-valuenow");
      if (value !== null) values.push(Number(value));
    }).observe(progressbar, { attributes: true, attributeFilter: ["aria-valuenow"] });
  });
  return () => element.evaluate((host) => [...(host as unknown as { recorded: number[] }).recorded]);
}

function assertNeverBackwards(values: number[]): void {
  for (let i = 1; i < values.length; i += 1) {
    assert.ok((values[i] ?? 0) >= (values[i - 1] ?? 0), `the bar went backwards: ${values.join(", ")}`);
  }
}

/** What the element shows, from its shadow DOM. */
async function shown(page: Page, id: string): Promise<Record<string, string | null>> {
  return bar(page, id).evaluate((host) => {
    const root = host.shadowRoot;
    const text = (part: string): string | null =>
      root?.querySelector(`[part~="${part}"]`)?.textContent ?? null;
    const cancel = root?.querySelector<HTMLButtonElement>('[part~="cancel"]');
    return {
      status: (host as HTMLElement).dataset.status ?? null,
      valuenow: root?.querySelector('[role="progressbar"]')?.getAttribute("aria-valuenow") ?? null,
      percent: text("percent"),
      label: text("status"),
      detail: text("detail"),
      cancel: cancel === null || cancel === undefined ? null : cancel.hidden ? "hidden" : "visible",
    };
  });
}

async function snapshotOf(gateway: DemoGateway, id: string): Promise<JobSnapshot> {
  const response = await gateway.request(`/exports/${id}`);
  assert.equal(response.status, 200);
  return (await response.json()) as JobSnapshot;
}

// -- tests ----------------------------------------------------------------------------------

test("start an export from the demo page: the bar advances and completes over WebSocket", async (t) => {
  await withDemo(t, "a-start-and-complete", async ({ gateway, page }) => {
    await page.goto(gateway.openUrl);
    await waitForConnection(page, "open", "websocket");
    assert.match(await page.locator("#connection").innerText(), /open · WebSocket/);

    const id = await startExport(page, { steps: 16, step_s: 0.25 });
    const recorded = await recordProgress(
      await bar(page, id)
        .elementHandle()
        .then((h) => h!),
    );
    const first = await progressAbove(page, id, 0);
    const second = await progressAbove(page, id, first);
    await progressAbove(page, id, second);
    await waitForStatus(page, id, "succeeded");

    const view = await shown(page, id);
    assert.equal(view.valuenow, "100");
    assert.equal(view.percent, "100%");
    assert.equal(view.label, "succeeded");
    assert.match(view.detail ?? "", /steps 16 · bytes_in \d+ · bytes_out \d+ · sha256 [0-9a-f]+…/);
    assert.equal(view.cancel, "hidden");
    const values = await recorded();
    assert.ok(new Set(values).size >= 3, `few distinct values: ${values.join(", ")}`);
    assertNeverBackwards(values);
    assert.equal((await snapshotOf(gateway, id)).status, "succeeded");
  });
});

test("SIGKILL the gateway mid-job and restart it: the same bar resumes and completes", async (t) => {
  await withDemo(t, "b-gateway-restart", async ({ gateway, page }) => {
    await page.goto(gateway.openUrl);
    await waitForConnection(page, "open", "websocket");
    const id = await startExport(page, { steps: 40, step_s: 0.3 });
    const element = (await bar(page, id).elementHandle())!;
    const recorded = await recordProgress(element);
    await progressAbove(page, id, 0);
    await page.evaluate(() => ((globalThis as unknown as { notReloaded: boolean }).notReloaded = true));

    await gateway.kill();
    await waitForConnection(page, "reconnecting");
    const atKill = Number((await shown(page, id)).valuenow);
    assert.ok(atKill < 100, `the job should still be running when the gateway dies (at ${atKill})`);
    await gateway.start(); // same port, same SQLite file; the job process never stopped
    await waitForConnection(page, "open", "websocket");

    await progressAbove(page, id, atKill);
    await waitForStatus(page, id, "succeeded");
    assert.equal(
      await element.evaluate((host) => host.isConnected && (host as HTMLElement).dataset.status),
      "succeeded",
      "the bar that finished is the one from before the restart",
    );
    assert.equal(
      await page.evaluate(() => (globalThis as unknown as { notReloaded?: boolean }).notReloaded),
      true,
      "the page was not reloaded",
    );
    assert.equal(await page.locator("pgw-job-progress").count(), 1);
    assertNeverBackwards(await recorded());
    assert.equal((await shown(page, id)).valuenow, "100");
    await page.locator("#log-panel summary").click(); // for the screenshot
  });
});

test("reload the page mid-job: the bar is restored from /exports/active and completes", async (t) => {
  await withDemo(t, "c-reload", async ({ gateway, page }) => {
    await page.goto(gateway.openUrl);
    await waitForConnection(page, "open", "websocket");
    const id = await startExport(page, { steps: 30, step_s: 0.25 });
    const before = await progressAbove(page, id, 0);

    const restored = page.waitForResponse(
      (response) => new URL(response.url()).pathname === "/exports/active" && response.status() === 200,
    );
    await page.reload();
    const active = (await (await restored).json()) as { active: JobSnapshot[] };
    assert.ok(
      active.active.some((job) => job.id === id),
      "the running job is in /exports/active",
    );
    await bar(page, id).waitFor();
    assert.equal(await page.locator("#form-status").innerText(), "", "the new page started nothing");
    await progressAbove(page, id, before);
    const recorded = await recordProgress((await bar(page, id).elementHandle())!);
    await waitForStatus(page, id, "succeeded");
    assertNeverBackwards(await recorded());
    assert.equal(await page.locator("pgw-job-progress").count(), 1);
  });
});

test("WebSocket blocked by a proxy: the page falls back to SSE, says so, and the bar completes", async (t) => {
  await withDemo(t, "d-websocket-blocked", async ({ gateway, page }) => {
    const proxy = new BlockingProxy(() => gateway.port);
    await proxy.start();
    try {
      proxy.blockWebSocket(true);
      await page.goto(`${proxy.url}/?token=${gateway.token}`);
      await waitForConnection(page, "fallback", "sse");
      assert.match(await page.locator("#connection").innerText(), /fallback · Server-Sent Events/);
      assert.ok(proxy.seen.refusedUpgrades >= 3, `refused upgrades: ${proxy.seen.refusedUpgrades}`);

      const id = await startExport(page, { steps: 16, step_s: 0.25 });
      const first = await progressAbove(page, id, 0);
      await progressAbove(page, id, first);
      await waitForStatus(page, id, "succeeded");
      assert.ok(proxy.seen.events >= 1, "the updates came over an event stream");
      assert.equal(proxy.seen.upgrades, 0, "no WebSocket got through");
      assert.equal(await page.locator("#connection").getAttribute("data-transport"), "sse");
      assert.equal((await shown(page, id)).valuenow, "100");
      await page.locator("#log-panel summary").click(); // for the screenshot
    } finally {
      await proxy.close();
    }
  });
});

test("the Cancel button ends a running job as cancelled", async (t) => {
  await withDemo(t, "e-cancel", async ({ gateway, page }) => {
    await page.goto(gateway.openUrl);
    await waitForConnection(page, "open", "websocket");
    const id = await startExport(page, { steps: 200, step_s: 0.2 });
    await progressAbove(page, id, 0);
    assert.equal((await shown(page, id)).cancel, "visible");

    await bar(page, id).locator('[part~="cancel"]').click();
    await waitForStatus(page, id, "cancelled");

    const view = await shown(page, id);
    assert.equal(view.label, "cancelled");
    assert.equal(view.cancel, "hidden");
    assert.ok(Number(view.valuenow) < 100);
    assert.equal((await snapshotOf(gateway, id)).status, "cancelled");
  });
});

test("a failing export and ids the gateway refuses show why; a job created elsewhere appears", async (t) => {
  await withDemo(t, "f-failure-and-curl", async ({ gateway, page }) => {
    await page.goto(gateway.openUrl);
    await waitForConnection(page, "open", "websocket");
    const failing = await startExport(page, { steps: 10, step_s: 0.05, fail_at_step: 3 });
    await waitForStatus(page, failing, "failed");
    assert.match((await shown(page, failing)).detail ?? "", /failed at step 3/);

    // Elements the page did not make, with ids the gateway refuses: they say why.
    const unknown = "00000000-0000-4000-8000-000000000000";
    await page.evaluate(
      (ids) => {
        for (const id of ids) {
          const element = document.createElement("pgw-job-progress");
          element.setAttribute("job-id", id);
          document.body.append(element);
        }
      },
      ["not-a-uuid", unknown],
    );
    await waitForStatus(page, "not-a-uuid", "error");
    await waitForStatus(page, unknown, "error");
    assert.equal((await shown(page, "not-a-uuid")).label, "bad_request");
    assert.equal((await shown(page, unknown)).label, "not_found");

    // Like `curl -X POST /exports` from a terminal: watchMine puts it on the page.
    const response = await gateway.request("/exports", {
      method: "POST",
      body: JSON.stringify({ kind: "demo", params: { steps: 8, step_s: 0.1 } }),
    });
    assert.equal(response.status, 201);
    const elsewhere = ((await response.json()) as JobSnapshot).id;
    await waitForStatus(page, elsewhere, "succeeded");
    assert.deepEqual(
      await page
        .locator("#jobs pgw-job-progress")
        .evaluateAll((elements) => elements.map((e) => e.getAttribute("job-id"))),
      [elsewhere, failing],
      "newest first",
    );
  });
});

test("without a token the page says how to get one", async (t) => {
  await withDemo(t, "g-no-token", async ({ gateway, page }) => {
    await page.goto(`${gateway.url}/`);
    await page.locator("#problem").waitFor();
    assert.match(await page.locator("#problem").innerText(), /progress-gateway demo/);
    assert.equal(await page.locator("#app").isHidden(), true);
  });
});

test("a token the gateway refuses: the page stops, says what to do once, and does not retry", async (t) => {
  await withDemo(t, "h-token-refused", async ({ gateway, page }) => {
    const sockets: string[] = [];
    page.on("websocket", (socket) => sockets.push(socket.url()));
    // Signed with another secret than the one this demo keeps: refused with 4401.
    const foreign = await mintToken("demo");
    await page.goto(`${gateway.url}/?token=${foreign}`);
    await waitForConnection(page, "closed");
    await page.locator("#problem").waitFor();
    const problem = await page.locator("#problem").innerText();
    assert.match(problem, /refused this page's token/);
    assert.match(problem, /progress-gateway demo/);
    assert.equal((problem.match(/refused this page's token/g) ?? []).length, 1, "said once");
    assert.equal(await page.locator("#connection").innerText(), "stopped · token refused");
    assert.equal(await page.locator('#start button[type="submit"]').isDisabled(), true);
    await page.locator("#log-panel summary").click();
    const log = await page.locator("#log").innerText();
    assert.doesNotMatch(log, /reconnecting/);
    assert.equal(sockets.length, 1, `WebSockets opened: ${sockets.join(", ")}`);
  });
});
