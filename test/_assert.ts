/**
 * Assertions for keycell's tests: node's strict assert, under the names Deno's std uses
 * (jsr is not reachable, so @std/assert is not available).
 *
 * @module
 */

export { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects, throws as assertThrows } from "node:assert/strict";
