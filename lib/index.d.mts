// Types of the ES module entry point (./index.mjs): the same API as ./index.d.ts.
export * from './index.js'
import * as chord from './index.js'
export default chord
