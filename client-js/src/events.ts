/**
 * `TypedEventTarget`: the platform `EventTarget` with a typed event map. Each event is a
 * `CustomEvent` whose `detail` is the map's value; `on()` is the short form that returns its own
 * unsubscribe function.
 */

export class TypedEventTarget<EventMap extends object> extends EventTarget {
  /** Listen to `type`; the listener gets the event's `detail`. Returns the unsubscribe function. */
  on<K extends keyof EventMap & string>(type: K, listener: (detail: EventMap[K]) => void): () => void {
    const wrapped = (event: Event): void => {
      listener((event as CustomEvent<EventMap[K]>).detail);
    };
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  protected emit<K extends keyof EventMap & string>(type: K, detail: EventMap[K]): void {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export interface TypedEventTarget<EventMap extends object> {
  addEventListener<K extends keyof EventMap & string>(
    type: K,
    listener: ((event: CustomEvent<EventMap[K]>) => void) | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof EventMap & string>(
    type: K,
    listener: ((event: CustomEvent<EventMap[K]>) => void) | null,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}
