// An OpenAI-compatible HTTP server over one loaded model, on Node's own `http` module:
// `POST /v1/chat/completions` and `POST /v1/completions` (streamed as server-sent events or
// not) and `GET /v1/models`. An app written against this API can later point the same client
// at llama.cpp's server or vLLM. Requests in flight at the same time are concurrent sequences
// of the model, decoded together; a client that disconnects aborts its generation.
'use strict'

const http = require('node:http')
const { randomUUID } = require('node:crypto')

const DEFAULT_MAX_BODY_BYTES = 8 << 20
// OpenAI's own default for the legacy completions endpoint.
const DEFAULT_COMPLETION_TOKENS = 16
const FINISH_REASONS = { eog: 'stop', stop: 'stop', maxTokens: 'length', contextFull: 'length' }

/** A request the server refuses, answered as OpenAI answers: `{ error: { message, type, param, code } }`. */
class ApiError extends Error {
  constructor(status, message, { type = 'invalid_request_error', param = null, code = null } = {}) {
    super(message)
    this.status = status
    this.type = type
    this.param = param
    this.code = code
  }
}

function invalid(param, message) {
  return new ApiError(400, message, { param })
}

/**
 * An `http.Server` (not yet listening) answering OpenAI's API with `model`.
 * `options.modelId` is the id clients name in requests (default: the file's `general.name`);
 * `options.maxBodyBytes` caps a request body (default 8 MB); `options.template` is a Jinja chat
 * template to use instead of the model's own (needed for chat with a model that has none).
 */
function createServer(model, options = {}) {
  if (options === null || typeof options !== 'object') throw typeError('options', 'must be an object')
  const modelId = options.modelId ?? model.info.name ?? 'chord-llm'
  if (typeof modelId !== 'string' || modelId.length === 0) throw typeError('modelId', 'must be a non-empty string')
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1) throw typeError('maxBodyBytes', 'must be a positive integer')
  if (options.template !== undefined && typeof options.template !== 'string') throw typeError('template', 'must be a string')
  const ctx = { model, modelId, maxBodyBytes, template: options.template, created: Math.floor(Date.now() / 1000) }
  return http.createServer((req, res) => {
    route(ctx, req, res).catch((err) => sendError(res, err))
  })
}

function typeError(option, message) {
  const err = new TypeError(`invalid option ${option}: ${message}`)
  err.code = 'ERR_INVALID_OPTION'
  return err
}

async function route(ctx, req, res) {
  const url = new URL(req.url, 'http://localhost')
  const path = url.pathname.replace(/\/+$/, '')
  const endpoint = `${req.method} ${path}`
  switch (endpoint) {
    case 'GET /v1/models':
      return sendJson(res, 200, { object: 'list', data: [modelObject(ctx)] })
    case `GET /v1/models/${encodeURIComponent(ctx.modelId)}`:
      return sendJson(res, 200, modelObject(ctx))
    case 'GET /health':
      return sendJson(res, 200, { status: 'ok' })
    case 'POST /v1/chat/completions':
      return complete(ctx, req, res, chatRequest(ctx, await readJson(ctx, req)))
    case 'POST /v1/completions':
      return complete(ctx, req, res, completionRequest(ctx, await readJson(ctx, req)))
  }
  if (path.startsWith('/v1/models/') && req.method === 'GET') {
    throw new ApiError(404, `The model '${decodeURIComponent(path.slice(11))}' does not exist`, { code: 'model_not_found', param: 'model' })
  }
  throw new ApiError(404, `Unknown request URL: ${req.method} ${url.pathname}`, { code: 'unknown_url' })
}

function modelObject(ctx) {
  return { id: ctx.modelId, object: 'model', created: ctx.created, owned_by: 'chord-llm' }
}

async function readJson(ctx, req) {
  const chunks = []
  let size = 0
  for await (const chunk of req) {
    size += chunk.length
    if (size > ctx.maxBodyBytes) throw new ApiError(413, `The request body is larger than ${ctx.maxBodyBytes} bytes`, { code: 'request_too_large' })
    chunks.push(chunk)
  }
  let body
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch (err) {
    throw new ApiError(400, `We could not parse the JSON body of your request: ${err.message}`)
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ApiError(400, 'The request body must be a JSON object')
  return body
}

/** The fields both endpoints share, checked and mapped to `generate` options. */
function samplingOptions(body, defaultMaxTokens) {
  const optionalNumber = (name, check, what) => {
    const v = body[name]
    if (v === undefined || v === null) return undefined
    if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw invalid(name, `${name} must be ${what}, got ${JSON.stringify(v)}`)
    return v
  }
  if (!(body.n === undefined || body.n === null || body.n === 1)) throw invalid('n', 'Only n = 1 is supported')
  for (const name of ['presence_penalty', 'frequency_penalty']) {
    if (!(body[name] === undefined || body[name] === null || body[name] === 0)) throw invalid(name, `${name} is not supported (only 0)`)
  }
  if (body.logprobs !== undefined && body.logprobs !== null && body.logprobs !== false) throw invalid('logprobs', 'logprobs are not supported')
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw invalid('stream', 'stream must be a boolean')
  const maxTokens =
    optionalNumber('max_completion_tokens', (v) => Number.isInteger(v) && v >= 1, 'a positive integer') ??
    optionalNumber('max_tokens', (v) => Number.isInteger(v) && v >= 1, 'a positive integer') ??
    defaultMaxTokens
  const temperature = optionalNumber('temperature', (v) => v >= 0 && v <= 2, 'a number in [0, 2]')
  const topP = optionalNumber('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]')
  // -1 is llama.cpp's "no seed"; other seeds must fit a JavaScript integer.
  let seed = optionalNumber('seed', (v) => Number.isSafeInteger(v) && v >= -1, 'an integer >= -1')
  if (seed === -1) seed = undefined
  let stop = body.stop ?? undefined
  if (typeof stop === 'string') stop = [stop]
  if (stop !== undefined && (!Array.isArray(stop) || stop.length > 4 || stop.some((s) => typeof s !== 'string' || s.length === 0))) {
    throw invalid('stop', 'stop must be a non-empty string or an array of at most 4 of them')
  }
  // llama.cpp's server extension: keep generating past end-of-generation tokens (benchmarks).
  if (body.ignore_eos !== undefined && typeof body.ignore_eos !== 'boolean') throw invalid('ignore_eos', 'ignore_eos must be a boolean')
  const streamOptions = body.stream_options ?? {}
  if (typeof streamOptions !== 'object') throw invalid('stream_options', 'stream_options must be an object')
  return {
    stream: body.stream === true,
    includeUsage: streamOptions.include_usage === true,
    generate: { maxTokens, temperature, topP, seed, stop, ignoreEos: body.ignore_eos === true },
  }
}

function checkModel(ctx, body) {
  if (typeof body.model !== 'string') throw invalid('model', 'you must provide a model parameter')
  if (body.model !== ctx.modelId) {
    throw new ApiError(404, `The model '${body.model}' does not exist (this server has '${ctx.modelId}')`, { code: 'model_not_found', param: 'model' })
  }
}

/** A chat message's content as text: a string, or the text parts of a list of parts. */
function messageText(content, i) {
  if (content === undefined || content === null || typeof content === 'string') return content
  if (Array.isArray(content)) {
    return content
      .map((part) => {
        if (part && part.type === 'text' && typeof part.text === 'string') return part.text
        throw invalid(`messages[${i}].content`, `Only text content parts are supported, got ${JSON.stringify(part && part.type)}`)
      })
      .join('')
  }
  throw invalid(`messages[${i}].content`, 'content must be a string or an array of text parts')
}

function chatRequest(ctx, body) {
  checkModel(ctx, body)
  if (!Array.isArray(body.messages) || body.messages.length === 0) throw invalid('messages', 'messages must be a non-empty array')
  const messages = body.messages.map((m, i) => {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string') throw invalid(`messages[${i}]`, 'each message must be an object with a string role')
    return { ...m, content: messageText(m.content, i) }
  })
  if (body.tools !== undefined && body.tools !== null) throw invalid('tools', 'tools are not supported by this server yet')
  const format = body.response_format
  if (format !== undefined && format !== null && format.type !== 'text') throw invalid('response_format', 'only response_format { type: "text" } is supported')
  const options = samplingOptions(body, undefined)
  let prompt
  try {
    prompt = ctx.model.tokenizeChat(messages, { template: ctx.template })
  } catch (err) {
    if (err.code === 'ERR_CHAT_TEMPLATE' || err.code === 'ERR_NO_CHAT_TEMPLATE' || err.code === 'ERR_INVALID_OPTION') throw invalid('messages', err.message)
    throw err
  }
  return { kind: 'chat', prompt, echo: '', ...options }
}

function completionRequest(ctx, body) {
  checkModel(ctx, body)
  let prompt = body.prompt
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === 'string') prompt = prompt[0]
  let ids
  let text = ''
  if (typeof prompt === 'string') {
    // As llama.cpp's server does, and `model.generate` with a string: control tokens spelled in
    // the prompt (`<|im_start|>`...) are parsed, so a prompt can be laid out by hand.
    ids = ctx.model.tokenize(prompt, { special: true })
    text = prompt
  } else if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((t) => Number.isInteger(t) && t >= 0 && t < ctx.model.info.vocabSize)) {
    ids = prompt
    text = ctx.model.detokenize(prompt)
  } else {
    throw invalid('prompt', 'prompt must be a string, an array of one string, or an array of token ids in the vocabulary')
  }
  if (body.suffix !== undefined && body.suffix !== null) throw invalid('suffix', 'suffix is not supported')
  if (!(body.best_of === undefined || body.best_of === null || body.best_of === 1)) throw invalid('best_of', 'Only best_of = 1 is supported')
  if (body.echo !== undefined && typeof body.echo !== 'boolean') throw invalid('echo', 'echo must be a boolean')
  const options = samplingOptions(body, DEFAULT_COMPLETION_TOKENS)
  return { kind: 'text', prompt: ids, echo: body.echo === true ? text : '', ...options }
}

/** Runs a checked request and answers it, streamed or whole. */
async function complete(ctx, req, res, request) {
  const contextSize = ctx.model.info.contextSize
  if (request.prompt.length >= contextSize) {
    throw invalid(
      request.kind === 'chat' ? 'messages' : 'prompt',
      `This model's context holds ${contextSize} tokens, but the prompt has ${request.prompt.length}`,
    )
  }
  const id = `${request.kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`
  const head = { id, object: request.kind === 'chat' ? 'chat.completion' : 'text_completion', created: Math.floor(Date.now() / 1000), model: ctx.modelId }
  // The client going away (a closed socket before the answer ended) aborts the generation.
  const abort = new AbortController()
  res.on('close', () => {
    if (!res.writableFinished) abort.abort()
  })
  const tokens = ctx.model.generate(request.prompt, { ...request.generate, signal: abort.signal })
  const usage = (end) => ({ prompt_tokens: request.prompt.length, completion_tokens: end.tokens, total_tokens: request.prompt.length + end.tokens })
  if (!request.stream) {
    let text = request.echo
    const end = await eachText(tokens, (t) => {
      text += t
    })
    const choice =
      request.kind === 'chat'
        ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: FINISH_REASONS[end.reason] }
        : { index: 0, text, logprobs: null, finish_reason: FINISH_REASONS[end.reason] }
    return sendJson(res, 200, { ...head, choices: [choice], usage: usage(end) })
  }

  res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' })
  const object = request.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion'
  const chunk = (delta, finishReason = null) =>
    request.kind === 'chat'
      ? { ...head, object, choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }] }
      : { ...head, object, choices: [{ index: 0, text: delta.content ?? '', logprobs: null, finish_reason: finishReason }] }
  try {
    if (request.kind === 'chat') await sendEvent(res, chunk({ role: 'assistant', content: '' }))
    if (request.echo) await sendEvent(res, chunk({ content: request.echo }))
    const end = await eachText(tokens, (t) => t && sendEvent(res, chunk({ content: t })))
    await sendEvent(res, chunk({}, FINISH_REASONS[end.reason]))
    if (request.includeUsage) await sendEvent(res, { ...head, object, choices: [], usage: usage(end) })
    res.end('data: [DONE]\n\n')
  } catch (err) {
    if (abort.signal.aborted) return
    // The status line is gone; the error goes out as an event, as OpenAI's streams do.
    const { body } = errorBody(err)
    if (!res.destroyed) res.end(`data: ${JSON.stringify(body)}\n\n`)
  } finally {
    await tokens.return(undefined)
  }
}

/** Passes each token's text to `onText` (awaited) and returns the generation's end. */
async function eachText(tokens, onText) {
  for (;;) {
    const item = await tokens.next()
    if (item.done) return item.value
    await onText(item.value.text)
  }
}

/** Writes one server-sent event, waiting while the client reads slower than tokens come. */
function sendEvent(res, data) {
  if (res.destroyed) return Promise.reject(Object.assign(new Error('client gone'), { name: 'AbortError' }))
  if (res.write(`data: ${JSON.stringify(data)}\n\n`)) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.on('drain', done)
    res.on('close', done)
  })
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) })
  res.end(text)
}

/** An error's status and OpenAI-shaped body; errors that are not the client's are 500s. */
function errorBody(err) {
  if (err instanceof ApiError) {
    return { status: err.status, body: { error: { message: err.message, type: err.type, param: err.param, code: err.code } } }
  }
  const code = err && err.code
  if (code === 'ERR_INVALID_OPTION') return { status: 400, body: { error: { message: err.message, type: 'invalid_request_error', param: null, code: null } } }
  if (code === 'ERR_DISPOSED') return { status: 503, body: { error: { message: 'The model was unloaded', type: 'server_error', param: null, code: 'model_unloaded' } } }
  const message = err && err.message ? err.message : String(err)
  return { status: 500, body: { error: { message, type: 'server_error', param: null, code: code ?? null } } }
}

function sendError(res, err) {
  const { status, body } = errorBody(err)
  if (res.headersSent) {
    if (!res.writableEnded) res.end()
    return
  }
  sendJson(res, status, body)
}

module.exports = { createServer }
