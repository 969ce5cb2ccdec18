/**
 * Fair scheduling of the key server's calls into its guests.
 *
 * Each connection has a lane (a FIFO of its own calls); lanes take turns, so one connection
 * pipelining at full speed gets one call in turn like any other and cannot starve the rest. Up to
 * `concurrency` calls run at once (one per guest in a pool). Every queue is bounded: a call that
 * would wait longer than `maxWaitMs` (judged from the calls ahead of it and how long calls take)
 * is refused at once, and one whose connection has gone is dropped before it reaches a guest.
 * Refused and dropped calls resolve with an UNAVAILABLE status, which Keyless answers as INTERNAL.
 *
 * @module
 */

import { Status } from "../core/protocol.ts";

/** The compartment's message function (keycell protocol bytes in, bytes out). */
export type SignerFunction = (request: Uint8Array) => Uint8Array | Promise<Uint8Array>;

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
  /** Calls that reached the signer. */
  called: number;
}

/** One connection's queue. */
export interface Lane {
  /** Queues one call; resolves with the signer's answer, or UNAVAILABLE when refused or dropped. */
  call(request: Uint8Array): Promise<Uint8Array>;
  /** The connection has gone: its queued calls are dropped. */
  close(): void;
}

interface Job {
  request: Uint8Array;
  queuedAt: number;
  resolve(response: Uint8Array): void;
}

interface LaneState {
  jobs: Job[];
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

const unavailable = () => Uint8Array.of(Status.UNAVAILABLE);

/**
 * Round-robin across lanes, bounded, deadline-aware.
 *
 * @example
 * ```ts
 * const scheduler = new FairScheduler((r) => compartment.handle(r), { concurrency: 4 });
 * const lane = scheduler.lane();
 * const response = await lane.call(request);
 * lane.close();
 * ```
 */
export class FairScheduler {
  readonly #signer: SignerFunction;
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

  constructor(signer: SignerFunction, options: SchedulerOptions = {}) {
    this.#signer = signer;
    this.#concurrency = options.concurrency ?? 1;
    this.#maxWaitMs = options.maxWaitMs ?? 5_000;
    this.#maxQueued = options.maxQueued ?? 65_536;
    if (!(this.#concurrency >= 1)) throw new RangeError(`concurrency must be at least 1, not ${this.#concurrency}`);
  }

  /** Calls waiting in every lane. */
  get queued(): number {
    return this.#queued;
  }

  /** A lane for one connection. */
  lane(): Lane {
    const state: LaneState = { jobs: [], head: 0, open: true, ringed: false };
    return {
      call: (request) => this.#submit(state, request),
      close: () => this.#close(state),
    };
  }

  /** Closes a lane and answers its queued calls at once: nobody waits for them any more. */
  #close(lane: LaneState): void {
    if (!lane.open) return;
    lane.open = false;
    const left = lane.jobs.length - lane.head;
    for (let i = lane.head; i < lane.jobs.length; i++) lane.jobs[i].resolve(unavailable());
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

  #submit(lane: LaneState, request: Uint8Array): Promise<Uint8Array> {
    if (!lane.open) {
      this.stats.dropped++;
      return Promise.resolve(unavailable());
    }
    if (this.#queued >= this.#maxQueued || this.#expectedWaitMs(lane) > this.#maxWaitMs) {
      this.stats.refused++;
      return Promise.resolve(unavailable());
    }
    return new Promise<Uint8Array>((resolve) => {
      lane.jobs.push({ request, queuedAt: performance.now(), resolve });
      this.#queued++;
      if (!lane.ringed) {
        lane.ringed = true;
        this.#ring.push(lane);
      }
      this.#pump();
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

  #pump(): void {
    while (this.#running < this.#concurrency && this.#queued > 0) {
      if (this.#sliceStart === 0) {
        // The slice ends when the event loop next gets a turn; a signer that answers
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
  #take(): Job | undefined {
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
        job.resolve(unavailable());
        continue;
      }
      return job;
    }
    return undefined;
  }

  async #run(job: Job): Promise<void> {
    this.#running++;
    this.stats.called++;
    const started = performance.now();
    let response: Uint8Array;
    try {
      response = await this.#signer(job.request);
    } catch {
      response = unavailable();
    }
    const ms = performance.now() - started;
    this.#averageMs = this.#averageMs === 0 ? ms : this.#averageMs * (1 - AVERAGE_WEIGHT) + ms * AVERAGE_WEIGHT;
    this.#running--;
    job.resolve(response);
    this.#pump();
  }
}
