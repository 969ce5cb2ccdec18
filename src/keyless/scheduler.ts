/**
 * Fair scheduling of the key server's calls into its key service (and so its guests).
 *
 * Each connection has a lane (a FIFO of its own calls); lanes take turns, so one connection
 * pipelining at full speed gets one call in turn like any other and cannot starve the rest: a
 * Keyless client signing as fast as it can, or `serve`'s one private connection carrying every
 * HTTP request. A call is any async job (a signature, a key-service RPC request). Up to
 * `concurrency` calls run at once (one per guest in a pool). Every queue is bounded: a call that
 * would wait longer than `maxWaitMs` is refused at once, one still queued when `maxWaitMs` has
 * passed is refused then (before it reaches a guest), and one whose connection has gone is
 * dropped before it runs. Refused and dropped calls reject with `signer_unavailable`, which
 * Keyless answers as INTERNAL.
 *
 * A call's wait is judged from the calls ahead of it in turn and how often a call finishes while
 * every slot is busy (the recent time per call over all guests). That interval, unlike the time
 * one call takes, stays short while one slot is held by a slow call (an RSA key generation
 * beside signatures), so slow calls do not get quick ones refused.
 *
 * @module
 */

import { KeycellError } from "../core/errors.ts";

/** One call: runs when its lane's turn comes. */
export type Job<T> = () => T | Promise<T>;

/** How a {@linkcode FairScheduler} runs calls. */
export interface SchedulerOptions {
  /** Calls in flight at once. Default 1. */
  concurrency?: number;
  /** The longest a call may wait in a queue; past it, it is refused. Default 250 ms. */
  maxWaitMs?: number;
  /** Calls queued across every lane at most. Default 65,536. */
  maxQueued?: number;
}

/** What the scheduler did, for tests and operators. */
export interface SchedulerStats {
  /** Calls refused at once or when their wait ran out. */
  refused: number;
  /** Calls dropped because their connection had gone. */
  dropped: number;
  /** Calls that ran. */
  called: number;
}

/** One connection's queue. */
export interface Lane {
  /**
   * Queues one call; settles as the job does, or rejects with `signer_unavailable` when it is
   * refused or dropped.
   */
  run<T>(job: Job<T>): Promise<T>;
  /**
   * Whether a call queued now would be taken rather than refused at once: a caller checks it
   * before doing any work of its own for a call that is to be refused anyway.
   */
  admits(): boolean;
  /** Calls of this lane waiting for their turn. */
  readonly queued: number;
  /** The connection has gone: its queued calls are dropped. */
  close(): void;
}

interface Queued {
  job: Job<unknown>;
  queuedAt: number;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

interface LaneState {
  jobs: Queued[];
  /** Index of the first job not yet taken. */
  head: number;
  open: boolean;
  /** Whether the lane is in the ring of lanes with work. */
  ringed: boolean;
}

/** Yield to the event loop after running synchronous calls for this long, so I/O is not starved. */
const SLICE_MS = 4;
/** Weight of the newest interval in the running average of intervals between calls finishing. */
const AVERAGE_WEIGHT = 0.1;

/**
 * One error for every refusal: under overload most calls are refused, and an error made for each
 * would capture a stack trace each on the thread that reads every connection.
 */
const REFUSED = new KeycellError("signer_unavailable", "the key server is busy; try again");
const refusal = <T>(): Promise<T> => Promise.reject(REFUSED);

/**
 * Round-robin across lanes, bounded, deadline-aware.
 *
 * @example
 * ```ts
 * import { FairScheduler } from "./scheduler.ts";
 * import type { KeyService } from "../core/key_service.ts";
 * import type { SignRequest } from "../core/signer_client.ts";
 *
 * async function signInTurn(service: KeyService, request: SignRequest): Promise<Uint8Array> {
 *   const scheduler = new FairScheduler({ concurrency: 4 });
 *   const lane = scheduler.lane(); // one per connection
 *   try {
 *     return await lane.run(() => service.sign(request));
 *   } finally {
 *     lane.close();
 *   }
 * }
 * ```
 */
export class FairScheduler {
  readonly #concurrency: number;
  readonly #maxWaitMs: number;
  readonly #maxQueued: number;
  /** Lanes with queued calls, served in turn. */
  #ring: LaneState[] = [];
  #turn = 0;
  #queued = 0;
  #running = 0;
  /**
   * Running average of the time between two calls finishing while every slot was busy, in ms: how
   * long each queued call adds to the wait of the calls behind it (0 until measured).
   */
  #intervalMs = 0;
  /** When the last call finished with every slot busy since; undefined while a slot is free. */
  #busyMark: number | undefined;
  /** Refuses calls that have waited out `maxWaitMs` while no slot frees to take them. */
  #sweepTimer: ReturnType<typeof setTimeout> | undefined;
  #sliceStart = 0;
  #pumpScheduled = false;
  readonly stats: SchedulerStats = { refused: 0, dropped: 0, called: 0 };

  constructor(options: SchedulerOptions = {}) {
    this.#concurrency = options.concurrency ?? 1;
    this.#maxWaitMs = options.maxWaitMs ?? 250;
    this.#maxQueued = options.maxQueued ?? 65_536;
    if (!(this.#concurrency >= 1)) throw new RangeError(`concurrency must be at least 1, not ${this.#concurrency}`);
  }

  /** Calls waiting in every lane. */
  get queued(): number {
    return this.#queued;
  }

  /** Calls waiting or running: 1 inside a call means that call is the only one. */
  get load(): number {
    return this.#queued + this.#running;
  }

  /** A lane for one connection. */
  lane(): Lane {
    const state: LaneState = { jobs: [], head: 0, open: true, ringed: false };
    return {
      run: <T>(job: Job<T>) => this.#submit(state, job),
      admits: () => state.open && this.#admits(state),
      get queued() {
        return state.jobs.length - state.head;
      },
      close: () => this.#close(state),
    };
  }

  /** Closes a lane and answers its queued calls at once: nobody waits for them any more. */
  #close(lane: LaneState): void {
    if (!lane.open) return;
    lane.open = false;
    const left = lane.jobs.length - lane.head;
    for (let i = lane.head; i < lane.jobs.length; i++) lane.jobs[i].reject(REFUSED);
    this.stats.dropped += left;
    this.#queued -= left;
    this.#unring(lane);
    this.#sweepIfQueued();
  }

  #submit<T>(lane: LaneState, job: Job<T>): Promise<T> {
    if (!lane.open) {
      this.stats.dropped++;
      return refusal();
    }
    if (!this.#admits(lane)) {
      this.stats.refused++;
      return refusal();
    }
    return new Promise<T>((resolve, reject) => {
      lane.jobs.push({ job, queuedAt: performance.now(), resolve: resolve as (value: unknown) => void, reject });
      this.#queued++;
      if (!lane.ringed) {
        lane.ringed = true;
        this.#ring.push(lane);
      }
      this.#pump();
      this.#sweepLater();
    });
  }

  #admits(lane: LaneState): boolean {
    return this.#queued < this.#maxQueued && this.#expectedWaitMs(lane) <= this.#maxWaitMs;
  }

  /**
   * How long a call queued now on `lane` would wait: with a slot free, none; otherwise one interval
   * between calls finishing for each call ahead of it in turn (each lane ahead of it runs one call
   * for every one of this lane's), and its own.
   */
  #expectedWaitMs(lane: LaneState): number {
    if (this.#running < this.#concurrency && this.#queued === 0) return 0;
    const own = lane.jobs.length - lane.head + 1;
    const ahead = Math.min(this.#queued + 1, own * Math.max(1, this.#ring.length + (lane.ringed ? 0 : 1)));
    return ahead * this.#intervalMs;
  }

  /**
   * While calls are queued, refuses every few milliseconds those that have waited out
   * `maxWaitMs`, so they are answered in time even when no slot frees (guests stuck on slow calls).
   */
  #sweepLater(): void {
    if (this.#sweepTimer !== undefined) return;
    this.#sweepTimer = setTimeout(() => {
      this.#sweepTimer = undefined;
      const oldest = performance.now() - this.#maxWaitMs;
      for (const lane of [...this.#ring]) {
        while (lane.head < lane.jobs.length && lane.jobs[lane.head].queuedAt < oldest) {
          const job = lane.jobs[lane.head++];
          this.#queued--;
          this.stats.refused++;
          job.reject(REFUSED);
        }
        if (lane.head === lane.jobs.length) this.#unring(lane);
      }
      this.#sweepIfQueued();
    }, Math.max(1, this.#maxWaitMs / 4));
  }

  /** Keeps the sweep going while calls are queued, and no timer when none are. */
  #sweepIfQueued(): void {
    if (this.#queued > 0) this.#sweepLater();
    else if (this.#sweepTimer !== undefined) {
      clearTimeout(this.#sweepTimer);
      this.#sweepTimer = undefined;
    }
  }

  /** Takes an emptied lane out of the ring. */
  #unring(lane: LaneState): void {
    lane.jobs = [];
    lane.head = 0;
    if (!lane.ringed) return;
    const at = this.#ring.indexOf(lane);
    this.#ring.splice(at, 1);
    if (at < this.#turn) this.#turn--;
    lane.ringed = false;
  }

  #pump(): void {
    while (this.#running < this.#concurrency && this.#queued > 0) {
      if (this.#sliceStart === 0) {
        // The slice ends when the event loop next gets a turn; a job that finishes
        // synchronously never gives it one, so past SLICE_MS the pump yields.
        this.#sliceStart = performance.now();
        setTimeout(() => (this.#sliceStart = 0), 0);
      } else if (performance.now() - this.#sliceStart > SLICE_MS) {
        this.#yieldThenPump();
        return;
      }
      const job = this.#take();
      if (job === undefined) return;
      this.#run(job);
    }
  }

  #yieldThenPump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setTimeout(() => {
      this.#pumpScheduled = false;
      this.#pump();
    }, 0);
  }

  /** The next lane's oldest call that can still be answered in time; refuses the others on the way. */
  #take(): Queued | undefined {
    while (this.#ring.length > 0) {
      if (this.#turn >= this.#ring.length) this.#turn = 0;
      const lane = this.#ring[this.#turn];
      const job = lane.jobs[lane.head++];
      this.#queued--;
      if (lane.head === lane.jobs.length) {
        lane.jobs = [];
        lane.head = 0;
        lane.ringed = false;
        this.#ring.splice(this.#turn, 1);
      } else {
        this.#turn++;
      }
      if (performance.now() - job.queuedAt > this.#maxWaitMs) {
        this.stats.refused++;
        job.reject(REFUSED);
        continue;
      }
      this.#sweepIfQueued();
      return job;
    }
    this.#sweepIfQueued();
    return undefined;
  }

  async #run(queued: Queued): Promise<void> {
    this.#running++;
    this.stats.called++;
    if (this.#running === this.#concurrency) this.#busyMark ??= performance.now();
    let settle: () => void;
    try {
      const value = await queued.job();
      settle = () => queued.resolve(value);
    } catch (err) {
      settle = () => queued.reject(err);
    }
    if (this.#busyMark !== undefined) {
      const now = performance.now();
      const ms = now - this.#busyMark;
      this.#intervalMs = this.#intervalMs === 0 ? ms : this.#intervalMs * (1 - AVERAGE_WEIGHT) + ms * AVERAGE_WEIGHT;
      // Still busy if a queued call takes the slot at once; otherwise measured again from when
      // every slot is next busy.
      this.#busyMark = this.#queued > 0 ? now : undefined;
    }
    this.#running--;
    settle();
    this.#pump();
  }
}
