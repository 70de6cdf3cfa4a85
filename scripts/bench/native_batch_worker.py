# Throughput worker of scripts/bench-batch.mjs for llama.cpp built for this CPU (llama-cpp-python
# from scripts/build-native-llama), run by batch-worker.mjs's "native-throughput" mode with the
# venv's python. For each N in cfg.streams: one context of N sequences, the N prompts evaluated
# in one batch (as chord-llm takes arriving prompts together), then one batch per step holding
# each sequence's next token, greedy (argmax of its logits), EOS ignored. llama-cpp-python's
# high-level Llama holds one sequence, so this drives llama.cpp's batch API directly.
# Prints exactly one JSON line on stdout: per N and run, each stream's token times (ms, one clock)
# and ids, and t0; the Node side computes the same figures as for the other engines.
import json
import sys
import time


def now_ms():
    return time.perf_counter() * 1000.0


def main():
    cfg = json.loads(sys.argv[1])
    import llama_cpp as L
    import numpy as np

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    t_load = time.perf_counter()
    model = L.llama_model_load_from_file(cfg['model'].encode(), mp)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {cfg['model']}")
    load_s = time.perf_counter() - t_load
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    prompt_tokens, gen_tokens = cfg['promptTokens'], cfg['genTokens']

    results = []
    for n in cfg['streams']:
        prompts = cfg['prompts'][:n]
        cp = L.llama_context_default_params()
        cp.n_ctx = n * cfg['contextSize']
        cp.n_batch = max(512, n * prompt_tokens)
        cp.n_seq_max = n
        cp.n_threads = cfg['threads']
        cp.n_threads_batch = cfg['threads']
        ctx = L.llama_init_from_model(model, cp)
        if not ctx:
            raise RuntimeError(f'llama.cpp could not create a context of {n} sequences')
        batch = L.llama_batch_init(cp.n_batch, 0, n)
        try:
            def decode(items):
                """items: (token, position, sequence, wants logits); returns the rows of logits asked for."""
                batch.n_tokens = len(items)
                for i, (tok, pos, seq, want) in enumerate(items):
                    batch.token[i] = tok
                    batch.pos[i] = pos
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = seq
                    batch.logits[i] = want
                rc = L.llama_decode(ctx, batch)
                if rc != 0:
                    raise RuntimeError(f'llama_decode returned {rc}')
                return [i for i, item in enumerate(items) if item[3]]

            def greedy(i):
                row = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
                return int(np.argmax(row))

            def run(prompts, steps):
                L.llama_memory_clear(L.llama_get_memory(ctx), True)
                t0 = now_ms()
                items = [(t, j, s, j == len(p) - 1) for s, p in enumerate(prompts) for j, t in enumerate(p)]
                rows = decode(items)
                last = [greedy(i) for i in rows]
                t = now_ms()
                streams = [{'times': [t], 'ids': [tok]} for tok in last]
                for step in range(1, steps):
                    rows = decode([(last[s], len(p) + step - 1, s, True) for s, p in enumerate(prompts)])
                    last = [greedy(i) for i in rows]
                    t = now_ms()
                    for s, tok in enumerate(last):
                        streams[s]['times'].append(t)
                        streams[s]['ids'].append(tok)
                return {'t0': t0, 'streams': streams}

            if cfg.get('warmup', True):
                run([p[:8] for p in prompts], 2)
            runs = [run(prompts, gen_tokens) for _ in range(cfg.get('repeat', 1))]
            results.append({'streams': n, 'runs': runs, 'contextSize': cfg['contextSize'], 'batchSize': cp.n_batch})
        finally:
            L.llama_batch_free(batch)
            L.llama_free(ctx)
    L.llama_model_free(model)
    print(json.dumps({'ok': True, 'loadS': load_s, 'results': results}))


if __name__ == '__main__':
    try:
        main()
    except Exception as e:  # one JSON line either way, as the Node side expects
        print(json.dumps({'ok': False, 'error': f'{type(e).__name__}: {e}'}))
        sys.exit(1)
