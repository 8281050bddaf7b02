/*
 * How long a refused client is told to stay away (Retry-After, whole seconds), from what the
 * service saw in the last second: with N clients that honour it, refusals arrive at about N per
 * Retry-After, whatever the service can take. Each costs the coordinator an HTTP exchange; under
 * 1000 clients a fixed 1 s made refusals outnumber commits several times over and eat the CPU the
 * admitted transactions needed. So the delay grows while far more is offered than admitted, and
 * falls back to 1 s as soon as the offer drops.
 *
 * The aim is an offer of about twice what was admitted: enough returning clients to keep every
 * slot busy (some give up, some come back late), few enough that refusing them costs little.
 * Each second the delay is scaled by offered / (2 × admitted): a multiplicative step that settles
 * where the offer meets the aim, and cannot oscillate wildly since a step takes a second to show.
 */

// The smallest delay the header can say; what everyone gets while the service keeps up.
export const MIN_RETRY_AFTER_SECONDS = 1;
// 10 s: a client is never told to stay away longer, so a stale estimate (load that fell at once)
// leaves slots idle for at most that long.
export const MAX_RETRY_AFTER_SECONDS = 10;
// One second: the header's own unit, and enough requests under overload for a stable ratio.
const WINDOW_MS = 1_000;
// Offer twice what was admitted (see above).
const OFFER_PER_ADMISSION = 2;

export class RetryAfter {
  readonly #now: () => number;
  #seconds = MIN_RETRY_AFTER_SECONDS;
  #windowStart: number;
  #admitted = 0;
  #refused = 0;

  constructor(now: () => number = Date.now) {
    this.#now = now;
    this.#windowStart = now();
  }

  admitted(): void {
    this.#roll();
    this.#admitted++;
  }

  /** Counts a refusal and says how long that client should wait. */
  refused(): number {
    this.#roll();
    this.#refused++;
    return this.#seconds;
  }

  #roll(): void {
    const now = this.#now();
    if (now - this.#windowStart < WINDOW_MS) return;
    // Nothing refused: the offer is what was admitted, so the delay halves. A whole second without
    // a single request since: the service was idle, back to the minimum.
    const offered = this.#admitted + this.#refused;
    const idle = now - this.#windowStart >= 2 * WINDOW_MS;
    const scaled = idle ? 0 : Math.round((this.#seconds * offered) / (OFFER_PER_ADMISSION * Math.max(1, this.#admitted)));
    this.#seconds = Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(MIN_RETRY_AFTER_SECONDS, scaled));
    this.#windowStart = now;
    this.#admitted = 0;
    this.#refused = 0;
  }
}
