// Shared helpers for the bench workers (scripts/bench/*-worker.mjs): config parsing,
// the fixed prompt text, peak-RSS reading and the one-JSON-line result protocol; and for the
// bench drivers (scripts/bench.mjs, scripts/bench-paging.mjs), command-line parsing and the
// page-cache preparation.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Fixed English text the 128-token benchmark prompt is cut from (repeated if a tokenizer needs more). */
export const PROMPT_TEXT =
  'The old lighthouse stood at the end of a narrow spit of rock, where the river met the sea. ' +
  'For more than a century its keepers had climbed the spiral stairs every evening to light the lamp, ' +
  'wind the clockwork that turned the great lens, and write a few lines in the logbook about the weather, ' +
  'the ships that passed, and anything unusual they had seen. The entries were short and practical: ' +
  'wind from the north-west, heavy swell, two fishing boats returned before dark, fog at midnight. ' +
  'Yet read together, year after year, they told a longer story about a small town that depended on the water, ' +
  'about storms that arrived without warning, and about the patience of people who spent their lives watching ' +
  'a horizon that rarely changed. When the light was finally automated, the last keeper packed the logbooks ' +
  'into wooden crates and carried them to the library in town, where a curious student found them many years later ' +
  'and began, page by page, to turn them into a history of the coast. She learned to read the faded handwriting, ' +
  'to recognise each keeper by the way they described the sea, and to match the dates with newspaper reports ' +
  'of shipwrecks, rescues, festivals and floods.';

/** The worker's config is passed as a single JSON argument. */
export function readConfig() {
  const raw = process.argv[2];
  if (!raw) throw new Error('bench worker: missing JSON config argument (run it through scripts/bench.mjs)');
  return JSON.parse(raw);
}

/** Peak resident set size of this process in bytes (VmHWM on Linux, else maxRSS). */
export function peakRssBytes() {
  return procKbFields('/proc/self/status', ['VmHWM']).VmHWM ?? process.resourceUsage().maxRSS * 1024;
}

/**
 * The fields of a /proc file that it gives in kB (`VmHWM:   1234 kB`), in bytes, by name: those
 * the file lacks are absent, and all of them off Linux.
 */
export function procKbFields(file, names) {
  const out = {};
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out; // not Linux
  }
  for (const name of names) {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s*kB`, 'm').exec(text);
    if (m) out[name] = Number(m[1]) * 1024;
  }
  return out;
}

export const now = () => performance.now();

/**
 * How this process's memory is mapped (/proc/self/smaps_rollup), MB: anonymous memory (the
 * weights' copy among it) and the part of it in 2 MiB pages, and file pages mapped through
 * 2 MiB entries (large folios). Null off Linux.
 */
export function mappedMegabytes() {
  const f = procKbFields('/proc/self/smaps_rollup', ['Anonymous', 'AnonHugePages', 'FilePmdMapped']);
  if (!Object.keys(f).length) return null;
  const mb = (bytes) => (bytes == null ? null : bytes / 1e6);
  return { anon: mb(f.Anonymous), anonHuge: mb(f.AnonHugePages), filePmd: mb(f.FilePmdMapped) };
}

/**
 * Waits until chord-llm's default copy of the weights, made on a thread of its own after the
 * load (see `useMmap`), is made, so that prefill and decode are measured as they run from then
 * on. Returns the seconds waited: 0 where nothing is copied, or for an addon without
 * `stats().copying`.
 */
export async function waitForWeightsCopy(model, timeoutS = 300) {
  const t0 = now();
  while (model.stats().copying) {
    if (now() - t0 > timeoutS * 1000) throw new Error(`the weights copy took over ${timeoutS} s`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return (now() - t0) / 1000;
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** chord-llm's JS API from `modulePath` (default: this repo), with a clear error when unbuilt. */
export function loadChord(modulePath) {
  const p = modulePath ? path.resolve(modulePath) : REPO_ROOT;
  let chord;
  try {
    chord = createRequire(path.join(REPO_ROOT, 'package.json'))(p);
  } catch (e) {
    throw new Error(`chord-llm is not loadable from ${p} (not built yet? run "npm run build"): ${e.message}`);
  }
  if (typeof chord.loadModel !== 'function') throw new Error(`${p} does not export loadModel()`);
  return chord;
}

/** Print the single JSON result line and exit once it is flushed. */
export function finish(result, code = 0) {
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code));
}

/** Run `main`, turning any failure (including stray rejections) into an {ok:false} JSON line. */
export function runWorker(engine, main) {
  let done = false;
  const fail = (err) => {
    if (done) return;
    done = true;
    const msg = err && err.message ? err.message : String(err);
    finish({ engine, ok: false, error: msg.split('\n').slice(0, 6).join('\n') }, 1);
  };
  process.on('unhandledRejection', fail);
  process.on('uncaughtException', fail);
  Promise.resolve()
    .then(main)
    .then(
      (res) => {
        if (done) return;
        done = true;
        finish({ engine, ok: true, ...res });
      },
      fail,
    );
}

/** Build `n` prompt ids from a tokenizer: optional BOS, then the fixed text (repeated as needed). */
export function buildPromptIds(tokenizeText, bos, n) {
  const ids = bos == null ? [] : [bos];
  // As many copies as one copy's token count says are needed (long prompts: --prompt-tokens
  // 2000 and more), and one more each time the joins tokenize shorter than that. One copy
  // where it is enough, as the default 128-token prompt always was.
  const perCopy = Math.max(1, Array.from(tokenizeText(PROMPT_TEXT), Number).length);
  let copies = Math.max(1, Math.ceil((n - ids.length) / perCopy));
  for (let tries = 0; tries < 4; tries++, copies++) {
    const toks = Array.from(tokenizeText(Array(copies).fill(PROMPT_TEXT).join(' ')), Number);
    if (ids.length + toks.length >= n) return ids.concat(toks).slice(0, n);
  }
  throw new Error(`could not build a ${n}-token prompt from the fixed text`);
}

// ---------------------------------------------------------------------------------------------
// Command line of the bench drivers.

/** A bad command line: the driver prints the message and its help, and exits with code 2. */
export class UsageError extends Error {}

/** `v` as an integer >= min; `name` is the flag as given. */
export function int(name, v, min) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${name} needs an integer >= ${min}, got "${v}"`);
  return n;
}

/** A comma-separated list, trimmed, without empties and duplicates; optionally only `allowed` values. */
export function list(name, v, allowed) {
  const xs = [...new Set(v.split(',').map((s) => s.trim()).filter(Boolean))];
  if (!xs.length) throw new UsageError(`${name} needs at least one value`);
  if (allowed) for (const x of xs) if (!allowed.includes(x)) throw new UsageError(`${name}: unknown "${x}" (${allowed.join(', ')})`);
  return xs;
}

/**
 * Walk `argv` in order. `options` maps flag names (aliases comma-separated: '--threads, -t') to
 * handlers called as handler(val, flag): `val()` returns the option's value (`--flag=value`, or
 * the next argument, which it consumes) and `flag` is the name as given. Any other argument
 * starting with '-' is an unknown option; the rest go to `positional(arg)`. Errors are UsageErrors.
 */
export function parseCli(argv, options, positional) {
  const handlers = new Map();
  for (const [names, handler] of Object.entries(options)) for (const name of names.split(',')) handlers.set(name.trim(), handler);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const [flag, inline] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const val = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value`);
      return argv[++i];
    };
    const handler = handlers.get(flag);
    if (handler) handler(val, flag);
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else positional(a);
  }
}

/** A `positional` for parseCli that stores the single model argument in `o.model`. */
export const oneModel = (o) => (a) => {
  if (o.model) throw new UsageError(`more than one model given ("${o.model}", "${a}")`);
  o.model = a;
};

/** The child a bench is waiting for, so a signal handler can kill it. */
let currentChild = null;

export function killCurrentChild() {
  if (currentChild) currentChild.kill('SIGKILL');
}

/**
 * Runs a worker script (node, its own process) with a JSON config; resolves with its JSON line (or an {ok:false} record).
 * With `cgroup`, the child joins the cgroup before node starts (sh writes its own pid, then execs).
 */
export function runChild(script, cfg, { timeoutS, cgroup = null, engine = 'chord-llm' }) {
  return new Promise((resolve) => {
    const args = [script, JSON.stringify(cfg)];
    const [cmd, argv] = cgroup
      ? ['sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, process.execPath, ...args]]
      : [process.execPath, args];
    const t0 = performance.now();
    let child;
    try {
      child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      resolve({ engine, ok: false, error: `could not start worker: ${e.message}` });
      return;
    }
    currentChild = child;
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => {
      err += d;
      if (err.length > 64 * 1024) err = err.slice(-32 * 1024);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutS * 1000);
    child.on('error', (e) => (err += `\n${e.message}`));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      currentChild = null;
      const line = out
        .split('\n')
        .reverse()
        .find((l) => l.trim().startsWith('{'));
      let res = null;
      try {
        res = line ? JSON.parse(line) : null;
      } catch {
        res = null;
      }
      if (!res) {
        const why = timedOut ? `timed out after ${timeoutS} s` : signal ? `killed by ${signal}` : `exited with code ${code}`;
        const tail = err.trim().split('\n').slice(-8).join('\n');
        res = { engine, ok: false, timedOut, signal, error: `worker ${why} without a result${tail ? `:\n${tail}` : ''}` };
      }
      res.wallS = (performance.now() - t0) / 1000;
      resolve(res);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The page cache. How a model file is cached decides what mapping it costs: after a sequential
// read the kernel holds it in large folios, mapped whole; read 4 KiB at a time, page by page.

/** Reads the whole file (16 MiB reads); returns the seconds it took. */
export function readWholeFile(file) {
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(16 << 20);
  const t0 = performance.now();
  try {
    let at = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, at);
      if (n <= 0) break;
      at += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return (performance.now() - t0) / 1000;
}

/**
 * Brings `file` into the page cache in the state `mode` names (see --page-cache); returns a
 * description for the report.
 */
/** Drops the file's clean cached pages (Linux; those no process maps). */
export function dropFilePages(file) {
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

export function preparePageCache(file, mode) {
  if (mode === 'as-is' || process.platform !== 'linux') return 'as found';
  dropFilePages(file);
  const t0 = performance.now();
  if (mode === 'fresh') {
    readWholeFile(file);
  } else {
    // Pages visited with a stride coprime to their count: no two reads are adjacent, so
    // readahead never starts and every page is cached on its own.
    const pages = Math.ceil(fs.statSync(file).size / 4096);
    let stride = 1_000_003;
    const gcd = (a, b) => (b ? gcd(b, a % b) : a);
    while (gcd(stride, pages) !== 1) stride += 2;
    const fd = fs.openSync(file, 'r');
    const buf = Buffer.allocUnsafe(4096);
    try {
      for (let i = 0, p = 0; i < pages; i++, p = (p + stride) % pages) fs.readSync(fd, buf, 0, 4096, p * 4096);
    } finally {
      fs.closeSync(fd);
    }
  }
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  return `${mode === 'fresh' ? 'read sequentially' : 'read in scattered 4 KiB pages'} after dropping its pages (${s} s)`;
}

/**
 * Runs `measure` `runs` times and returns the result with the median time (`seconds(result)`):
 * one prompt evaluation of a small model takes a few hundred ms, and on a shared host one
 * such evaluation at one thread measured anywhere from 380 to 680 ms in one process.
 */
export async function medianOfRuns(runs, measure, seconds = (r) => r) {
  const results = [];
  for (let k = 0; k < Math.max(1, runs); k++) results.push(await measure());
  results.sort((a, b) => seconds(a) - seconds(b));
  return results[(results.length - 1) >> 1];
}

/** The kernel's count of file pages cached in huge folios (/proc/meminfo FileHugePages), MB. */
export function fileHugePagesMb() {
  const bytes = procKbFields('/proc/meminfo', ['FileHugePages']).FileHugePages;
  return bytes == null ? null : bytes / 1e6;
}

