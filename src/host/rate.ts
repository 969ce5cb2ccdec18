/**
 * Request rates per token: a token bucket that refills continuously.
 *
 * @module
 */

/** A token's allowance, as `tokens.json` states it. */
export interface RateLimit {
  /** Requests per second, sustained; fractions allowed (0.5 is one every two seconds). */
  perSecond: number;
  /** Requests allowed at once after a quiet spell. Default: `perSecond`, and at least 1. */
  burst?: number;
}

/**
 * A token bucket: holds up to `burst` requests, refilled at `perSecond`.
 *
 * @example
 * ```ts
 * const bucket = new TokenBucket({ perSecond: 100, burst: 200 });
 * const wait = bucket.take(); // 0 when allowed, else seconds until the next request would be
 * ```
 */
export class TokenBucket {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #now: () => number;
  #available: number;
  #at: number;

  /**
   * Throws when the limit is not a positive, finite rate and burst.
   *
   * @param now milliseconds from any fixed origin; tests pass their own clock.
   */
  constructor(limit: RateLimit, now: () => number = () => performance.now()) {
    const burst = limit.burst ?? Math.max(1, limit.perSecond);
    if (!(Number.isFinite(limit.perSecond) && limit.perSecond > 0)) throw new Error("perSecond must be a positive number");
    if (!(Number.isFinite(burst) && burst >= 1)) throw new Error("burst must be a number of at least 1");
    this.#perMs = limit.perSecond / 1000;
    this.#burst = burst;
    this.#now = now;
    this.#available = burst;
    this.#at = now();
  }

  /** Takes one request's worth: 0 when it is allowed, else the seconds until one would be. */
  take(): number {
    const now = this.#now();
    this.#available = Math.min(this.#burst, this.#available + (now - this.#at) * this.#perMs);
    this.#at = now;
    if (this.#available >= 1) {
      this.#available -= 1;
      return 0;
    }
    return (1 - this.#available) / this.#perMs / 1000;
  }
}
