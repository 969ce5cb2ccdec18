/**
 * Fair, bounded scheduling of calls into a key service (and so its guests), shared by the key
 * server (each connection a lane) and `serve` (each token a lane). About 500 lines: the
 * turns, the bounds on waiting, the pace they are judged by and the express path all read and
 * change the same lane state.
 *
 * Each lane is a FIFO of its own calls; lanes take turns, so one connection pipelining at full
 * speed gets one call in turn like any other and cannot starve the rest: a Keyless client
 * signing as fast as it can, or `serve`'s one private connection carrying every HTTP request. A
 * call is any async job (a signature, a key-service RPC request, an HTTP route's handler). Up to
 * `concurrency` calls run at once (two per guest in the key server, 32 in `serve`). Every queue
 * is bounded: a call that would wait longer than `maxWaitMs` is refused at once, one still queued
 * when `maxWaitMs` has passed is refused then (before it reaches a guest), and one whose lane has
 * closed (its connection gone) or whose signal has aborted (its HTTP client gone) is dropped
 * before it runs. Refused and
 * dropped calls reject with `busy`, which Keyless answers as INTERNAL and HTTP as 503 with
 * `Retry-After`. A call submitted as unbounded ({@linkcode RunOptions.bounded}) is never refused
 * for its wait: one whose caller bounds the wait itself.
 *
 * A call's wait is judged from the calls ahead of it in turn and how often a call finishes while
 * every slot is busy (the recent time per call over all guests). That interval, unlike the time
 * one call takes, stays short while one slot is held by a slow call (an RSA key generation
 * beside signatures), so slow calls do not get quick ones refused. The same pace sets how many
 * requests one connection may have under way ({@linkcode FairScheduler.share}), and a call from a
 * lane with nothing else under way may start at once as an express call
 * ({@linkcode SchedulerOptions.expressEvery}).
 *
 * Platform-neutral (timers and `performance.now()` only), so every face can import it.
 *
 * @module
 */

import { KeycellError } from "./errors.ts";

/** One call: runs when its lane's turn comes; `express` says it runs outside the turns (see {@linkcode SchedulerOptions.expressEvery}). */
export type Job<T> = (call: { express: boolean }) => T | Promise<T>;

/** How a {@linkcode FairScheduler} runs calls. */
export interface SchedulerOptions {
  /** Calls in flight at once. Default 1. */
  concurrency?: number;
  /** The longest a call may wait in a queue; past it, it is refused. Default {@linkcode DEFAULT_MAX_WAIT_MS}. */
  maxWaitMs?: number;
  /** Calls queued across every lane at most. Default 65,536. */
  maxQueued?: number;
  /**
   * A call from a lane with nothing else queued or running (a client sending one request at a
   * time) starts at once as an express call, beside the `concurrency` others, when none is
   * running and at least this many other calls have started since the last one; the caller runs
   * it somewhere other than where the queued calls wait (the key server: its own guest). So a
   * light client waits neither for its turn nor behind the calls already handed to the guests,
   * while express calls stay at most one in `expressEvery + 1`. Default: no express calls.
   */
  expressEvery?: number;
}

/** What the scheduler did, for tests and operators. */
export interface SchedulerStats {
  /** Calls refused at once or when their wait ran out. */
  refused: number;
  /** Calls dropped because their connection or their caller had gone. */
  dropped: number;
  /** Calls that ran (express calls included). */
  called: number;
  /** Calls that ran as express calls. */
  express: number;
}

/** How one call is queued. */
export interface RunOptions {
  /**
   * Whether the call is refused when it would wait, or has waited, longer than `maxWaitMs`.
   * Default true. False for a caller that bounds the wait itself before it submits the call
   * (`serve`'s key-service RPC requests to a key server): only the queue's length and the lane
   * closing refuse it then.
   */
  bounded?: boolean;
  /**
   * The caller's interest in the call: once it aborts (an HTTP client has gone), the call is
   * dropped if it is still queued, and rejects with `busy`; a call already running runs on. Read
   * only when the call has to queue (it may be a getter).
   */
  signal?: AbortSignal;
}

/** One connection's (or one token's) queue. */
export interface Lane {
  /**
   * Queues one call; settles as the job does, or rejects with `busy` when it is refused or
   * dropped.
   */
  run<T>(job: Job<T>, options?: RunOptions): Promise<T>;
  /**
   * Whether a call submitted now would be refused at once; if so it counts as refused, and the
   * caller answers it so itself, before doing any work of its own for it.
   */
  refuses(): boolean;
  /** Calls of this lane waiting for their turn or running. */
  readonly load: number;
  /** The connection has gone: its queued calls are dropped. */
  close(): void;
}

interface Queued {
  lane: LaneState;
  job: Job<unknown>;
  /** When the call is refused if still queued: Infinity for an unbounded call. */
  deadline: number;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

interface LaneState {
  /** Taken jobs stay before `head` until {@linkcode COMPACT_AFTER} have gathered there. */
  jobs: Queued[];
  /** Index of the first job not yet taken. */
  head: number;
  open: boolean;
  /** Whether the lane is in the ring of lanes with work. */
  ringed: boolean;
  /** Calls of this lane running. */
  running: number;
}

/**
 * Taken jobs a lane keeps before it drops them, once they are also at least half its array: a
 * lane that never empties (one connection pipelining without pause, a token always busy) would
 * otherwise keep every call it ever queued, and its request, for as long as it stays busy.
 */
const COMPACT_AFTER = 64;

/** A lane with nothing queued or running, never in the ring: what a new lane's first call meets. */
const NEW_LANE: LaneState = Object.freeze({ jobs: [], head: 0, open: true, ringed: false, running: 0 }) as LaneState;

/**
 * The longest a call waits for a guest unless told otherwise (the default of
 * KEYCELL_KEYSERVER_MAX_QUEUE_WAIT_MS and KEYCELL_MAX_QUEUE_WAIT_MS): generous, since a tighter
 * bound also refuses bursts of a few busy connections on a slow or shared machine; operators set
 * it from their clients' timeout.
 */
export const DEFAULT_MAX_WAIT_MS = 5_000;

/** Yield to the event loop after running synchronous calls for this long, so I/O is not starved. */
const SLICE_MS = 4;
/**
 * Calls finished with every slot busy over which the pace is measured: answers come back from
 * the guests in bursts, so the pace is their count over the time they took, not an average of
 * the gaps between them one by one.
 */
const PACE_CALLS = 32;
/** Weight of the newest measure of the pace against the one before. */
const PACE_WEIGHT = 0.5;

/**
 * One error for every refusal: under overload most calls are refused, and an error made for each
 * would capture a stack trace each on the thread that reads every connection. A second is soon
 * enough to retry: the queue is refused only past its bound, and drains within it.
 */
const REFUSED = new KeycellError("busy", "no guest can take this request in time; retry later", 1);
const refusal = <T>(): Promise<T> => Promise.reject(REFUSED);

/**
 * Round-robin across lanes, bounded, deadline-aware.
 *
 * @example
 * ```ts
 * import { FairScheduler } from "./scheduler.ts";
 * import type { KeyService } from "./key_service.ts";
 * import type { SignRequest } from "./signer_client.ts";
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
  readonly #expressEvery: number;
  #expressRunning = 0;
  /** Calls started in turn since the last express call. */
  #sinceExpress = Number.MAX_SAFE_INTEGER;
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
  /** Time with every slot busy, and calls finished in it, since the pace was last measured. */
  #busyMs = 0;
  #busyCalls = 0;
  /** Refuses calls that have waited out `maxWaitMs` while no slot frees to take them. */
  #sweepTimer: ReturnType<typeof setTimeout> | undefined;
  #sliceStart = 0;
  #pumpScheduled = false;
  readonly stats: SchedulerStats = { refused: 0, dropped: 0, called: 0, express: 0 };
  /**
   * The error refused and dropped calls reject with (`busy`, retry after a second), for a caller
   * that answers a refusal itself after {@linkcode Lane.refuses}.
   */
  static readonly refusal: KeycellError = REFUSED;

  constructor(options: SchedulerOptions = {}) {
    this.#concurrency = options.concurrency ?? 1;
    this.#maxWaitMs = options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
    this.#maxQueued = options.maxQueued ?? 65_536;
    this.#expressEvery = options.expressEvery ?? Infinity;
    if (!(this.#concurrency >= 1)) throw new RangeError(`concurrency must be at least 1, not ${this.#concurrency}`);
  }

  /** Calls waiting in every lane. */
  get queued(): number {
    return this.#queued;
  }

  /** Calls waiting or running: 1 inside a call means that call is the only one. */
  get load(): number {
    return this.#queued + this.#running + this.#expressRunning;
  }

  /**
   * How many requests one connection should have under way at once: those the guests finish
   * in a quarter of the longest wait, at the pace calls have been finishing (at least two per
   * slot; no bound until the pace is known). A connection held to it is not read further
   * meanwhile, so a client pipelining at full speed waits in its own socket rather than filling
   * the queue until its calls are refused, answering which at once would only bring more of them
   * to read. Taking turns with three other busy connections or fewer, a connection's share waits
   * less than the longest wait; beside more, its calls are refused before it reaches its share,
   * so an overloaded server still reads and refuses at once what it cannot sign in time.
   */
  get share(): number {
    if (this.#intervalMs === 0) return Infinity;
    return Math.max(2 * this.#concurrency, Math.floor(this.#maxWaitMs / 4 / this.#intervalMs));
  }

  /**
   * Whether a call of a new lane would be refused at once, as {@linkcode Lane.refuses} says for
   * a lane, without making one; if so it counts as refused.
   */
  refusesNewLane(): boolean {
    const refuses = !this.#expressNow(NEW_LANE) && !this.#admits(NEW_LANE);
    if (refuses) this.stats.refused++;
    return refuses;
  }

  /** A lane for one connection. */
  lane(): Lane {
    const state: LaneState = { jobs: [], head: 0, open: true, ringed: false, running: 0 };
    return {
      run: <T>(job: Job<T>, options?: RunOptions) => this.#submit(state, job, options),
      refuses: () => {
        const refuses = !state.open || !this.#expressNow(state) && !this.#admits(state);
        if (refuses) this.stats.refused++;
        return refuses;
      },
      get load() {
        return state.jobs.length - state.head + state.running;
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

  #submit<T>(lane: LaneState, job: Job<T>, options: RunOptions | undefined): Promise<T> {
    if (!lane.open) {
      this.stats.dropped++;
      return refusal();
    }
    if (this.#expressNow(lane)) return this.#express(lane, job);
    // Nothing waits and there is room: the call runs now, without a turn to wait for.
    if (this.#queued === 0 && this.#running < this.#concurrency) {
      return this.#call(lane, job);
    }
    const bounded = options?.bounded ?? true;
    if (bounded ? !this.#admits(lane) : this.#queued >= this.#maxQueued) {
      this.stats.refused++;
      return refusal();
    }
    // Read only now: a served request's signal costs the server work of its own once asked for.
    const signal = options?.signal;
    if (signal?.aborted) {
      this.stats.dropped++;
      return refusal();
    }
    let dropOnAbort: (() => void) | undefined;
    const queued = new Promise<T>((resolve, reject) => {
      const deadline = bounded ? performance.now() + this.#maxWaitMs : Infinity;
      const call: Queued = { lane, job, deadline, resolve: resolve as (value: unknown) => void, reject };
      lane.jobs.push(call);
      this.#queued++;
      if (!lane.ringed) {
        lane.ringed = true;
        this.#ring.push(lane);
      }
      if (signal !== undefined) {
        dropOnAbort = () => this.#drop(call);
        signal.addEventListener("abort", dropOnAbort, { once: true });
      }
      this.#pump(false);
      this.#sweepLater();
    });
    if (dropOnAbort === undefined) return queued;
    return queued.finally(() => signal!.removeEventListener("abort", dropOnAbort!));
  }

  /** Takes one queued call out of its lane (its caller has gone); a call no longer queued is left be. */
  #drop(call: Queued): void {
    const lane = call.lane;
    const at = lane.jobs.indexOf(call, lane.head);
    if (at < 0) return;
    lane.jobs.splice(at, 1);
    this.#queued--;
    this.stats.dropped++;
    call.reject(REFUSED);
    if (lane.head === lane.jobs.length) this.#unring(lane);
    this.#sweepIfQueued();
  }

  /** Whether a call of `lane` would start now as an express call. */
  #expressNow(lane: LaneState): boolean {
    return lane.running === 0 && lane.jobs.length === lane.head && this.#expressRunning === 0 && this.#sinceExpress >= this.#expressEvery;
  }

  async #express<T>(lane: LaneState, job: Job<T>): Promise<T> {
    this.#expressRunning++;
    this.#sinceExpress = 0;
    lane.running++;
    this.stats.called++;
    this.stats.express++;
    try {
      return await job({ express: true });
    } finally {
      this.#expressRunning--;
      lane.running--;
    }
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
      const now = performance.now();
      for (const lane of [...this.#ring]) {
        // Bounded calls expire in the order they came; an unbounded one among them never does.
        let expired = 0;
        for (let i = lane.head; i < lane.jobs.length; i++) if (lane.jobs[i].deadline < now) expired++;
        if (expired === 0) continue;
        const kept: Queued[] = [];
        for (let i = lane.head; i < lane.jobs.length; i++) {
          const job = lane.jobs[i];
          if (job.deadline < now) job.reject(REFUSED);
          else kept.push(job);
        }
        this.#queued -= expired;
        this.stats.refused += expired;
        lane.jobs = kept;
        lane.head = 0;
        if (kept.length === 0) this.#unring(lane);
      }
      this.#sweepIfQueued();
    }, Math.max(1, this.#maxWaitMs / 4));
  }

  /**
   * Keeps the sweep going while calls are queued. Once none are, an armed sweep is left to run out
   * (it finds nothing and arms no other): under load the queue empties and fills again between
   * most calls, and clearing and arming a timer each time cost about 2 µs of CPU a request.
   */
  #sweepIfQueued(): void {
    if (this.#queued > 0) this.#sweepLater();
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
      this.#call(job.lane, job.job).then(job.resolve, job.reject);
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
        if (lane.head >= COMPACT_AFTER && lane.head * 2 >= lane.jobs.length) {
          lane.jobs.splice(0, lane.head);
          lane.head = 0;
        }
      }
      if (performance.now() > job.deadline) {
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

  /** Runs one call in a slot: a queued one whose turn has come, or one that found room at once. */
  async #call<T>(lane: LaneState, job: Job<T>): Promise<T> {
    this.#running++;
    lane.running++;
    this.#sinceExpress++;
    this.stats.called++;
    if (this.#running === this.#concurrency) this.#busyMark ??= performance.now();
    try {
      return await job({ express: false });
    } finally {
      if (this.#busyMark !== undefined) {
        const now = performance.now();
        this.#busyMs += now - this.#busyMark;
        // The first measure from a single call, then from PACE_CALLS at a time.
        if (++this.#busyCalls >= (this.#intervalMs === 0 ? 1 : PACE_CALLS)) {
          const ms = this.#busyMs / this.#busyCalls;
          this.#intervalMs = this.#intervalMs === 0 ? ms : this.#intervalMs * (1 - PACE_WEIGHT) + ms * PACE_WEIGHT;
          this.#busyMs = 0;
          this.#busyCalls = 0;
        }
        // Still busy if a queued call takes the slot at once; otherwise measured again from when
        // every slot is next busy.
        this.#busyMark = this.#queued > 0 ? now : undefined;
      }
      this.#running--;
      lane.running--;
      this.#pump(true);
    }
  }
}
