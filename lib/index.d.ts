// Types of chord-llm's public API (lib/index.js). The native layer's own types are in ../index.d.ts.

/** Error codes carried by `err.code` on every error chord-llm throws or rejects with. */
export type ChordErrorCode =
  | 'ERR_FILE_NOT_FOUND'
  | 'ERR_IO'
  | 'ERR_NOT_GGUF'
  | 'ERR_UNSUPPORTED_GGUF_VERSION'
  | 'ERR_GGUF_TRUNCATED'
  | 'ERR_GGUF_MALFORMED'
  | 'ERR_GGUF_MISSING_KEY'
  | 'ERR_GGUF_WRONG_KEY_TYPE'
  | 'ERR_UNSUPPORTED_TENSOR_TYPE'
  | 'ERR_UNSUPPORTED_ARCHITECTURE'
  | 'ERR_MISSING_TENSOR'
  | 'ERR_TENSOR_SHAPE'
  | 'ERR_UNSUPPORTED_TOKENIZER'
  | 'ERR_INVALID_TOKENIZER'
  | 'ERR_INVALID_OPTION'
  | 'ERR_INVALID_TOKEN'
  | 'ERR_CONTEXT_FULL'
  | 'ERR_DISPOSED'
  | 'ERR_SESSION_BUSY'
  | 'ERR_MODEL_FILE_CHANGED'
  | 'ERR_CHAT_TEMPLATE'
  | 'ERR_NO_CHAT_TEMPLATE'
  | 'ERR_INTERNAL'
  | 'ABORT_ERR'

export interface ChordError extends Error {
  code: ChordErrorCode
}

export interface LoadProgress {
  loadedBytes: number
  totalBytes: number
}

export interface LoadOptions {
  /** Compute threads. Default: the number of CPUs (one fewer when layers are paged in every token, leaving a core to the prefetch thread). */
  threads?: number
  /** Positions per sequence (prompt + generated). Default: min(4096, the model's trained context). */
  contextSize?: number
  /**
   * Bytes of weights allowed resident: a number of bytes or a size such as '512MB' (powers of
   * 1000) or '2GiB' (powers of 1024). The KV cache and scratch buffers are not part of it.
   * Default: no limit.
   */
  memoryBudget?: number | string
  /**
   * 'auto' (default) pages only when the weights do not fit memoryBudget; 'always' pages even
   * when they do; 'never' maps everything resident.
   */
  paging?: 'auto' | 'always' | 'never'
  /** Layers the prefetch thread loads ahead of the one computing when paged. Default 2. */
  prefetchLayers?: number
  /**
   * How paged layers are loaded: 'mmap' (the default on Linux) maps their pages in with
   * MADV_POPULATE_READ and drops them with MADV_DONTNEED, no copy; 'read' (the default
   * elsewhere) copies them into buffers with positioned reads. Either way a read error
   * becomes a JS error.
   */
  pagingMethod?: 'read' | 'mmap'
  /**
   * Which layers a paged model evicts: 'fixed' (default) keeps a fixed set resident and streams
   * the rest, evicting the layer needed last; 'lru' is plain least-recently-used, which never
   * hits on the forward pass's cyclic order (it exists to be measured against).
   */
  evictionPolicy?: 'fixed' | 'lru'
  /**
   * Generations decoded at once (sessions and `model.generate` calls alike): whatever of them
   * want a token at the same moment go through one forward pass together. A generation beyond
   * this many waits for one to end (or to be stopped) before its first token; its `signal`
   * aborts the wait. Default 8.
   */
  maxSequences?: number
  /**
   * How KV caches store keys and values: 'f16' (default) or 'q8_0', which takes about half the
   * memory (34 bytes per 32 values), as llama.cpp's cache-type option. 'q8_0' needs heads of
   * whole 32-value blocks.
   */
  kvCacheType?: 'f16' | 'q8_0'
  /**
   * `'auto'` (default): on Linux, when the page cache holds much of the file in 4 KiB pages (a
   * file read in scattered pieces, or partly paged out and faulted back in), its cached pages are
   * dropped and it is read again, once, through a `MADV_HUGEPAGE` mapping, so that it maps in
   * 2 MiB pages (Qwen2.5-1.5B: decode 20-30% faster, paging 2.5-3x faster), 8 MiB mapped at a
   * time (a paged model's peak RSS stays within its budget). The read is part of the load's
   * progress. Skipped when the file is over half the available memory.
   * Not done for `useMmap: false`, whose copy reads the whole file anyway. `'keep'`: use the
   * page cache as it is.
   */
  pageCache?: 'auto' | 'keep'
  /**
   * `true`: a resident model's weights are read straight from the memory-mapped file.
   * `false`: they are all copied into the process's own memory at load, as llama.cpp's
   * `use_mmap` false does: in 2 MiB pages whatever state the page cache is in, with the matrices
   * the x86 kernels have a faster layout for rearranged (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K), and the
   * tensors in the order the forward pass reads them, with the same results bit for bit.
   * Rearranged matrices decode faster, one sequence at one thread included (Qwen2.5-1.5B: 11%;
   * SmolLM2: 6-9% more tokens a second than from the mapping).
   *
   * Default, on x86: the model loads mapped, as with `true`, and a thread then copies the
   * rearranged matrices (a tied output head among them) and every other tensor under 32 MiB but
   * the token embeddings; each layer is read from the copy once the copy has reached it, and
   * the file's pages the copy replaces are given back. The larger tensors stay mapped
   * (Qwen2.5-1.5B copies 789 MB of its 1117 MB file, Qwen2.5-0.5B 247 of 491). On ARM
   * everything is mapped. The copy takes the OS providing that much fresh memory: about 0.1 s
   * per 500 MB where memory is already backed, several seconds per GB on a VM whose host backs
   * guest memory only when touched. Where the compute threads take every core, it waits for the
   * gaps between forward passes, so it never slows them: tokens decode at the mapped speed until
   * the model has been idle long enough for the copy. With fewer threads than cores it runs
   * beside them, but does not copy a layer while a forward pass reads it from the file (which
   * would hold it in memory twice). `false` copies everything during the load instead (part of
   * `onProgress`). A copy is not shared with the page cache or other processes, and it is not
   * made (the file is mapped) when the file is over half the available memory. `stats().copied`,
   * `stats().copying` and `stats().copiedBytes` tell which. Paged models read the layers they
   * stream from the file; the layers they keep resident for good are copied and rearranged the
   * same way: after the load by a thread of their own at the lowest priority (`pagingMethod`
   * 'mmap'; `stats()` reports that copy), or as they are read ('read', where every layer is a
   * copy and `stats().copied` stays false).
   */
  useMmap?: boolean
  /** Called as the weights are read in (about every 50 ms while loading, and once at the end). */
  onProgress?: (progress: LoadProgress) => void
  /** Aborting rejects the load with an AbortError (code ABORT_ERR). */
  signal?: AbortSignal
}

export interface ModelInfo {
  architecture: string
  name?: string
  /** Total number of weights. */
  parameters: number
  fileBytes: number
  layers: number
  /** Positions per sequence in this session. */
  contextSize: number
  /** Context length the model was trained with. */
  contextLength: number
  vocabSize: number
  threads: number
  /** Number of tensors of each GGML type, e.g. { Q4_1: 210, F32: 61, Q8_0: 1 }. */
  tensorTypes: Record<string, number>
  /** Bytes of all weights. */
  weightBytes: number
  /** Whether the weights are paged (only part of them resident at a time). */
  paged: boolean
  /** Bytes of one sequence's KV cache at full context (not part of memoryBudget). */
  kvCacheBytes: number
  kvCacheType: 'f16' | 'q8_0'
  maxSequences: number
  /** The Jinja chat template the file carries (`tokenizer.chat_template`), or null (base models). */
  chatTemplate: string | null
  /** The smallest `memoryBudget` (bytes) the model can be paged in: its largest layer or output head. */
  minMemoryBudget: number
}

export interface ModelStats {
  paged: boolean
  /**
   * The weights, all or the rearranged matrices (see `useMmap`), are a copy in the process's
   * memory; paged with `pagingMethod` 'mmap', the layers kept resident for good are ('read'
   * copies every layer as it loads it and reports false).
   */
  copied: boolean
  /** Bytes of that copy made so far: 0 where every weight is read from the mapped file. */
  copiedBytes: number
  /** The default copy (paged: of the layers kept resident) is being made, on a thread of its own after the load. */
  copying: boolean
  budgetBytes: number
  /** Weight bytes resident now (resident mode: all of them). */
  residentBytes: number
  peakResidentBytes: number
  /** Layers (or the output head) read from the file. */
  layerLoads: number
  /** Layers the forward pass found resident. */
  layerHits: number
  /** Of those, layers the prefetch thread had loaded in time. */
  prefetchHits: number
  /** Milliseconds the forward pass waited for layers. */
  stallMs: number
  bytesRead: number
  /** Sequences alive: sessions, and `model.generate` calls in progress. */
  sequences: number
  /** Bytes their KV caches hold (evaluated positions). */
  kvBytes: number
  /** Forward passes that evaluated generations' tokens, and the tokens they evaluated: passTokens / passes is how many tokens shared each pass's weight reads. */
  passes: number
  passTokens: number
}

export interface TokenizeOptions {
  /** Prepend BOS. Default: what the model's metadata says (tokenizer.ggml.add_bos_token). */
  addBos?: boolean
  /** Parse special-token text such as `<|im_start|>` into special tokens. Default: false. */
  special?: boolean
}

export interface DetokenizeOptions {
  /** Render special (control) tokens as their text. Default: false (they render as nothing). */
  special?: boolean
}

export interface LogitsOptions {
  /** First position whose logits are returned. Default: the last position only. */
  from?: number
}

/**
 * Perplexity protocol: the text is tokenized without BOS and without parsing special tokens,
 * cut to `maxTokens` and then to whole windows of `window` tokens; each window is evaluated from
 * a fresh state, with BOS in front where the model adds BOS; every token except the first of
 * each window is scored with NLL = -log softmax(logits at the previous position)[token]
 * (float64 over the whole vocabulary); perplexity = exp(mean NLL).
 */
export interface PerplexityOptions {
  /** Tokens per window. Default 512. */
  window?: number
  /** Use at most this many tokens of the text. Default: all. */
  maxTokens?: number
}

export interface PerplexityResult {
  perplexity: number
  /** Mean negative log-likelihood per scored token, in nats. */
  meanNll: number
  /** How many tokens were scored. */
  tokens: number
}

export interface GenerateOptions {
  /** Tokens to generate at most. Default: until end of generation or the context is full. */
  maxTokens?: number
  /** 0 is greedy. Default 0.8. */
  temperature?: number
  /** 0 disables. Default 40. */
  topK?: number
  /** 1 disables. Default 0.95. */
  topP?: number
  /** 0 disables. Default 0.05. */
  minP?: number
  /** 1 disables. Default 1. */
  repeatPenalty?: number
  /** How many recent tokens the repeat penalty considers. Default 64. */
  repeatLastN?: number
  /** Makes sampling reproducible. Default: random. */
  seed?: number
  /** Generation ends when the text contains one of these; the stop string itself is not yielded. */
  stop?: string[]
  /** Keep generating past end-of-generation tokens. Default false. */
  ignoreEos?: boolean
  /** Aborting stops generation within one token; the loop throws an AbortError. */
  signal?: AbortSignal
}

export interface GeneratedToken {
  /** Token id (for a final item carrying held-back text, the end-of-generation token or -1). */
  id: number
  /**
   * Text this token releases. Empty while the token ends inside a UTF-8 character or while the
   * text could still be the beginning of a stop string; it comes out with a later token.
   */
  text: string
}

/**
 * Why a generation ended: the generator's return value (`for await` drops it; a loop calling
 * `next()` sees it with `done: true`; undefined when the caller ended it with `return()`). `eog`: an end-of-generation token; `maxTokens`; `stop`:
 * one of the stop strings; `contextFull`: no position left.
 */
export interface GenerationEnd {
  reason: 'eog' | 'maxTokens' | 'stop' | 'contextFull'
  /** Tokens generated (an ending end-of-generation token not counted). */
  tokens: number
}

export interface SessionOptions {
  /** Positions the session holds (prompts + generated). Default: the model's `contextSize`. */
  contextSize?: number
  /**
   * What happens when the session is full and needs another position. `false` (default): the
   * generation ends (its last item is the end, reason `contextFull`). `{ keep: n }`: the oldest
   * tokens after the first n are dropped (half of those after them, as llama.cpp does) and the
   * cached keys re-rotated to their new positions, without evaluating anything again.
   */
  contextShift?: false | { keep: number }
}

/**
 * A sequence that keeps its tokens and KV cache between generations. Generations of different
 * sessions (and `model.generate` calls) running at the same time are decoded together.
 */
export declare class Session {
  private constructor()
  /** Token ids held: prompts and generated tokens, in order. */
  readonly tokens: number[]
  /** Bytes the evaluated tokens take in the KV cache. */
  readonly kvBytes: number
  readonly contextSize: number
  /**
   * Appends the prompt to what the session holds and generates after it; only tokens the cache
   * has not seen are evaluated, and the generated tokens stay in the session. A string prompt
   * is tokenized with BOS (where the model adds one) only when the session is empty. One
   * generation at a time per session (another one throws ERR_SESSION_BUSY).
   */
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): AsyncGenerator<GeneratedToken, GenerationEnd | undefined, undefined>
  /** Keeps the first `n` tokens: rewind for "regenerate" or an edited message. */
  truncate(n: number): void
  /** Forgets everything the session holds. */
  reset(): void
  /** Stops a generation in progress and frees the KV cache. */
  dispose(): void
}

/** A message of a conversation, as chat templates read it (OpenAI / Hugging Face shape). */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {})
  /** Text; null for an assistant turn that only calls tools; some templates take a list of parts. */
  content?: string | null | unknown[]
  name?: string
  tool_calls?: Array<{ type?: 'function'; id?: string; function: { name: string; arguments: string | Record<string, unknown> } }>
  /** Anything else a template reads (`tool_call_id`, `reasoning_content`, ...) is passed through. */
  [key: string]: unknown
}

export interface ChatTemplateOptions {
  /** Append the start of the assistant's turn (what a reply is generated after). Default true. */
  addGenerationPrompt?: boolean
  /** Tool schemas (JSON Schema function definitions) for templates that describe tools. */
  tools?: unknown[]
  /** A Jinja template to use instead of the model's own. */
  template?: string
  /** `bos_token` / `eos_token` texts for the template. Default: the vocabulary's BOS and EOS. */
  bosToken?: string
  eosToken?: string
}

export interface ChatOptions extends SessionOptions {
  /** A system message put first in the conversation (and kept by `reset`). */
  systemPrompt?: string
  /** A Jinja template to use instead of the model's own (required for models without one). */
  template?: string
}

/**
 * A conversation kept in a session. Each `send` renders the whole conversation with the chat
 * template and evaluates only the tokens after the longest prefix the session already holds.
 */
export declare class Chat {
  private constructor()
  /** The conversation so far (copies): the system prompt, user messages and assistant replies. */
  readonly messages: ChatMessage[]
  /** Token ids the chat's session holds. */
  readonly tokens: number[]
  readonly kvBytes: number
  readonly contextSize: number
  /** The last turn's prompt length in tokens and how many of them were evaluated (the rest were reused). */
  readonly lastTurn: { promptTokens: number; evaluatedTokens: number } | undefined
  /**
   * Adds a user message and streams the reply. Generation stops at the model's end-of-turn
   * tokens (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`...), which are not part of the text. The
   * reply, as far as it got if the loop breaks or is aborted, joins `messages` when the stream
   * ends. One `send` at a time (another throws ERR_SESSION_BUSY).
   */
  send(content: string, options?: GenerateOptions): AsyncGenerator<GeneratedToken, GenerationEnd | undefined, undefined>
  /** Forgets the conversation; the system prompt stays. */
  reset(): void
  /** Stops a reply in progress and frees the KV cache. */
  dispose(): void
}

export declare class Model {
  private constructor()
  readonly info: ModelInfo
  tokenize(text: string, options?: TokenizeOptions): number[]
  detokenize(ids: ArrayLike<number>, options?: DetokenizeOptions): string
  /**
   * Logits of positions `from`..ids.length-1 evaluated in a fresh state, one row of
   * `info.vocabSize` values per position.
   */
  logits(ids: ArrayLike<number>, options?: LogitsOptions): Promise<Float32Array>
  /**
   * Generates from a prompt. A string is tokenized with the model's BOS rule and special tokens
   * parsed; an array is used as token ids.
   */
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): AsyncGenerator<GeneratedToken, GenerationEnd | undefined, undefined>
  /** A sequence that keeps its KV cache between generations. */
  createSession(options?: SessionOptions): Session
  /**
   * Renders messages with the model's chat template (or `options.template`) exactly as Hugging
   * Face transformers' `apply_chat_template` does. A template's `raise_exception(...)` or any
   * render error throws ERR_CHAT_TEMPLATE with its message; a model without a template and no
   * `template` option throws ERR_NO_CHAT_TEMPLATE.
   */
  applyChatTemplate(messages: ChatMessage[], options?: ChatTemplateOptions): string
  /**
   * The rendered conversation as token ids. Special tokens the template writes are special; the
   * same text inside any string of the messages is tokenized as plain text, so a user who types
   * `<|im_end|><|im_start|>system` cannot open a system turn. BOS is added where the model adds
   * one, unless the template already begins with it.
   */
  tokenizeChat(messages: ChatMessage[], options?: ChatTemplateOptions): number[]
  /**
   * A chat: a session plus its conversation, rendered with the chat template. Throws
   * ERR_NO_CHAT_TEMPLATE for a model without a template (base models) unless `template` is given.
   */
  createChat(options?: ChatOptions): Chat
  /** Perplexity of `text` under the protocol described at PerplexityOptions. */
  perplexity(text: string, options?: PerplexityOptions): Promise<PerplexityResult>
  /** Weight residency and paging counters. */
  stats(): ModelStats
  /**
   * Releases the model: its running generations stop within one token (their loops throw
   * ERR_DISPOSED), its sessions and chats are disposed, and the memory is freed once the
   * generations have stopped. Later calls on the model or its sessions throw ERR_DISPOSED.
   */
  dispose(): Promise<void>
}

export declare function loadModel(path: string, options?: LoadOptions): Promise<Model>

/**
 * What `loadModel(path, options)` would report as `model.info`, from the file's metadata and
 * tensor list alone: no weight is read. Throws the errors `loadModel` would for a bad file.
 */
export declare function inspectModel(path: string, options?: Omit<LoadOptions, 'onProgress' | 'signal'>): Promise<ModelInfo>

export interface ServerOptions {
  /** The model id clients name in requests and `GET /v1/models` lists. Default: the file's `general.name`. */
  modelId?: string
  /** Largest request body accepted, in bytes. Default 8 MB. */
  maxBodyBytes?: number
  /** A Jinja chat template to use instead of the model's own (chat with a model that has none). */
  template?: string
}

/**
 * An OpenAI-compatible HTTP server over `model` (an `http.Server`, not yet listening; call
 * `listen(port, '127.0.0.1')`): `POST /v1/chat/completions`, `POST /v1/completions` (streamed
 * as server-sent events with `stream: true`), `GET /v1/models`. Requests in flight at once are
 * decoded together as concurrent sequences; a client that disconnects aborts its generation.
 */
export declare function createServer(model: Model, options?: ServerOptions): import('node:http').Server
