/**
 * The listener moved to src/server/ (relay.ts and one file per concern). Kept
 * for src/cli.ts, whose import is owned elsewhere; import src/server/relay.ts.
 */
export { Relay } from './server/relay.js';
