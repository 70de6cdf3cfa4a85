// The ES module entry point: the same API as the CommonJS one (./index.js), which it loads.
import chord from './index.js'

export const { loadModel, inspectModel, createServer, Model, Session, Chat } = chord
export default chord
