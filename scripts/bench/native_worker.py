# Bench worker for llama.cpp built for this CPU (llama-cpp-python from scripts/build-native-llama),
# run by scripts/bench/native-worker.mjs with the venv's python. The same measurements as
# llama-worker.mjs, through llama-cpp-python's Llama: load, prefill of the given prompt ids in a
# fresh state, greedy decode with EOS ignored. Prints exactly one JSON line on stdout.
# Peak RSS is the python process's: it includes llama-cpp-python's own logits array (n_batch x
# n_vocab f32, 297 MiB for Qwen2.5's vocabulary at n_batch 512) on top of llama.cpp's memory.
import json
import sys
import time


def peak_rss_bytes():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    return None


def main():
    cfg = json.loads(sys.argv[1])
    t_init = time.perf_counter()
    import llama_cpp
    from llama_cpp import Llama
    init_s = time.perf_counter() - t_init

    ids = cfg.get('promptIds')
    t_load = time.perf_counter()
    llm = Llama(
        model_path=cfg['model'],
        n_ctx=cfg['contextSize'],
        n_batch=max(512, cfg['promptTokens']),
        n_threads=cfg['threads'],
        n_threads_batch=cfg['threads'],
        n_gpu_layers=0,
        verbose=False,
    )
    load_s = time.perf_counter() - t_load
    if ids is None:
        raise RuntimeError('needs the shared prompt ids (run it through scripts/bench.mjs)')
    if len(ids) + cfg['genTokens'] > llm.n_ctx():
        raise RuntimeError(f"context size {llm.n_ctx()} too small for {len(ids)}+{cfg['genTokens']} tokens")

    def prefill():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        return time.perf_counter() - t0

    # The first evaluation after the load also gives the time to first token.
    first_s = prefill()
    # The median of prefillRuns evaluations, as the other workers take it (medianOfRuns).
    runs = sorted(prefill() for _ in range(max(1, cfg.get('prefillRuns', 1)))) if cfg.get('warmup', True) else [first_s]
    prefill_s = runs[(len(runs) - 1) // 2]

    # Decode: greedy from the prompt the prefill left in the state (generate finds it cached and
    # samples the first token from the prefill's logits, as the other workers take it from their
    # prefill; then it evaluates one token per step and does not stop at EOS). Timed from the
    # first token to the last, as the other workers do.
    tokens = []
    t_first = t_last = None
    for tok in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        tokens.append(int(tok))
        t_last = time.perf_counter()
        if t_first is None:
            t_first = t_last
        if len(tokens) >= cfg['genTokens']:
            break
    decode_s = t_last - t_first
    print(json.dumps({
        'engine': 'llama.cpp native',
        'ok': True,
        'initS': init_s,
        'loadS': load_s,
        'ttftS': load_s + first_s,
        'promptTokens': len(ids),
        'prefillS': prefill_s,
        'prefillTokS': len(ids) / prefill_s,
        'genTokens': len(tokens),
        'decodeS': decode_s,
        'decodeTokS': (len(tokens) - 1) / decode_s if decode_s > 0 else None,
        'peakRssBytes': peak_rss_bytes(),
        'firstTokens': tokens[:16],
        'contextSize': llm.n_ctx(),
        'threads': cfg['threads'],
        'version': llama_cpp.__version__,
    }))


if __name__ == '__main__':
    try:
        main()
    except BaseException as e:  # one JSON line whatever happens
        print(json.dumps({'engine': 'llama.cpp native', 'ok': False, 'error': f'{type(e).__name__}: {e}'}))
        sys.exit(1)
