"""What recording costs on a forward: a decoder LM's forward with and without `attnlab.record`,
interleaved, medians and their ratio (target: ≤ 1.10). Recording keeps references to q, k and the
inputs; it computes nothing until `rec.weights` is asked.

    PYTHONPATH=src python benchmarks/recorder_overhead.py [--json out.json]
"""

import json
import statistics
import sys
import time

import torch

import attnlab
from attnlab.models.decoder_lm import DecoderLM, DecoderLMConfig

torch.manual_seed(0)
CASES = [("causal ; softmax", 256), ("causal & window(64) ; softmax", 1024),
         ("causal ; entmax(1.5)", 256)]


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


rows = []
for program, n in CASES:
    model = DecoderLM(DecoderLMConfig(vocab_size=512, d_model=128, layers=4, heads=4,
                                      programs=program, max_len=n)).eval()
    tokens = torch.randint(0, 512, (4, n))

    def plain(model=model, tokens=tokens):
        model(tokens)

    def recorded(model=model, tokens=tokens):
        with attnlab.record(model):
            model(tokens)

    with torch.no_grad():
        plain(), recorded()  # warm-up: plans, caches
        # one plain and one recorded forward after the other, many times: the machine's drift
        # hits both alike, and the median of the pairs' ratios is what recording costs
        pairs = [(seconds(plain), seconds(recorded)) for _ in range(31)]
    base = statistics.median(p for p, _ in pairs) * 1e3
    rec = statistics.median(r for _, r in pairs) * 1e3
    ratio = statistics.median(r / p for p, r in pairs)
    rows.append({"program": program, "n": n, "plain_ms": round(base, 3),
                 "recorded_ms": round(rec, 3), "ratio": round(ratio, 3)})
    print(f"{program:32s} N={n:5d}  plain {base:8.2f} ms  recorded {rec:8.2f} ms  "
          f"median ratio {ratio:.3f}")
if "--json" in sys.argv:
    with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
        json.dump({"threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
