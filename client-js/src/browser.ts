/**
 * Browser signals the client honours when `globalThis.window` exists: `offline` pauses
 * reconnect attempts, `online` and a page becoming visible again retry at once (and refresh the
 * restored jobs) instead of waiting out a long backoff. In Node nothing is attached.
 */

interface Listenable {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

interface BrowserGlobals {
  window?: Listenable;
  document?: Listenable & { visibilityState?: string };
  navigator?: { onLine?: boolean };
}

export interface BrowserCallbacks {
  offline(): void;
  wake(): void;
}

export class BrowserHooks {
  offline: boolean;
  private readonly detachers: Array<() => void> = [];

  private constructor(globals: BrowserGlobals) {
    this.offline = globals.navigator?.onLine === false;
  }

  /** Listen to `online`, `offline` and `visibilitychange`; `null` outside a browser. */
  static attach(callbacks: BrowserCallbacks, globals: BrowserGlobals = globalThis): BrowserHooks | null {
    const browserWindow = globals.window;
    if (browserWindow === undefined) return null;
    const hooks = new BrowserHooks(globals);
    hooks.listen(browserWindow, "offline", () => {
      hooks.offline = true;
      callbacks.offline();
    });
    hooks.listen(browserWindow, "online", () => {
      hooks.offline = false;
      callbacks.wake();
    });
    const doc = globals.document;
    if (doc !== undefined) {
      hooks.listen(doc, "visibilitychange", () => {
        if (doc.visibilityState === "visible") callbacks.wake();
      });
    }
    return hooks;
  }

  detach(): void {
    for (const detach of this.detachers.splice(0)) detach();
  }

  private listen(target: Listenable, type: string, listener: () => void): void {
    target.addEventListener(type, listener);
    this.detachers.push(() => target.removeEventListener(type, listener));
  }
}
