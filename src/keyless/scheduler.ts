/**
 * Fair scheduling of the key server's calls into its key service (and so its guests).
 *
 * Each connection has a lane (a FIFO of its own calls); lanes take turns, so one connection
 * pipelining at full speed gets one call in turn like any other and cannot starve the rest: a
 * Keyless client signing as fast as it can, or `serve`'s one private connection carrying every
 * HTTP request. A call is any async job (a signature, a key-service RPC request). Up to
 * `concurrency` calls run at once (one per guest in a pool). Every queue is bounded: a call that
 * would wait longer than `maxWaitMs` (judged from the calls ahead of it and how long calls take)
 * is refused at once, and one whose connection has gone is dropped before it runs. Refused and
 * dropped calls reject with `signer_unavailable`, which Keyless answers as INTERNAL.
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
  /** The longest a call may wait in a queue; past it, it is refused. Default 5 s. */
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
/** Weight of the newest call in the running average of call times. */
const AVERAGE_WEIGHT = 0.2;

const refused = () => new KeycellError("signer_unavailable", "the key server is busy; try again");

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
  /** Running average of how long one call takes, in ms (0 until one has run). */
  #averageMs = 0;
  #sliceStart = 0;
  #pumpScheduled = false;
  readonly stats: SchedulerStats = { refused: 0, dropped: 0, called: 0 };

  constructor(options: SchedulerOptions = {}) {
    this.#concurrency = options.concurrency ?? 1;
    this.#maxWaitMs = options.maxWaitMs ?? 5_000;
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
      close: () => this.#close(state),
    };
  }

  /** Closes a lane and answers its queued calls at once: nobody waits for them any more. */
  #close(lane: LaneState): void {
    if (!lane.open) return;
    lane.open = false;
    const left = lane.jobs.length - lane.head;
    for (let i = lane.head; i < lane.jobs.length; i++) lane.jobs[i].reject(refused());
    this.stats.dropped += left;
    this.#queued -= left;
    lane.jobs = [];
    lane.head = 0;
    if (lane.ringed) {
      const at = this.#ring.indexOf(lane);
      this.#ring.splice(at, 1);
      if (at < this.#turn) this.#turn--;
      lane.ringed = false;
    }
  }

  #submit<T>(lane: LaneState, job: Job<T>): Promise<T> {
    if (!lane.open) {
      this.stats.dropped++;
      return Promise.reject(refused());
    }
    // Nothing waits and there is room: the call runs now, without a turn to wait for.
    if (this.#queued === 0 && this.#running < this.#concurrency) {
      return new Promise<T>((resolve, reject) => this.#run({ job, queuedAt: 0, resolve: resolve as (value: unknown) => void, reject }));
    }
    if (this.#queued >= this.#maxQueued || this.#expectedWaitMs(lane) > this.#maxWaitMs) {
      this.stats.refused++;
      return Promise.reject(refused());
    }
    return new Promise<T>((resolve, reject) => {
      lane.jobs.push({ job, queuedAt: performance.now(), resolve: resolve as (value: unknown) => void, reject });
      this.#queued++;
      if (!lane.ringed) {
        lane.ringed = true;
        this.#ring.push(lane);
      }
      this.#pump(false);
    });
  }

  /**
   * How long a call queued now on `lane` would wait: in turns, each lane ahead of it runs one call
   * for every one of this lane's, and `concurrency` calls run at once.
   */
  #expectedWaitMs(lane: LaneState): number {
    const own = lane.jobs.length - lane.head + 1;
    const ahead = Math.min(this.#queued + this.#running, own * Math.max(1, this.#ring.length + (lane.ringed ? 0 : 1)));
    return Math.floor(ahead / this.#concurrency) * this.#averageMs;
  }

  /**
   * Starts queued calls while there is room. `afterCall`: a call has just finished, so this runs
   * in a chain of microtasks, which never gives the event loop a turn while the calls it starts
   * finish synchronously: that chain is timed, from its first call to the event loop's next turn,
   * and past SLICE_MS the pump yields. Calls started as requests arrive are not timed, which spares
   * a call that comes alone a timer.
   */
  #pump(afterCall: boolean): void {
    while (this.#running < this.#concurrency && this.#queued > 0) {
      if (this.#sliceStart === 0) {
        if (afterCall) {
          this.#sliceStart = performance.now();
          setTimeout(() => (this.#sliceStart = 0), 0);
        }
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
      this.#pump(true);
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
        job.reject(refused());
        continue;
      }
      return job;
    }
    return undefined;
  }

  async #run(queued: Queued): Promise<void> {
    this.#running++;
    this.stats.called++;
    const started = performance.now();
    let settle: () => void;
    try {
      const value = await queued.job();
      settle = () => queued.resolve(value);
    } catch (err) {
      settle = () => queued.reject(err);
    }
    const ms = performance.now() - started;
    this.#averageMs = this.#averageMs === 0 ? ms : this.#averageMs * (1 - AVERAGE_WEIGHT) + ms * AVERAGE_WEIGHT;
    this.#running--;
    settle();
    this.#pump(true);
  }
}
