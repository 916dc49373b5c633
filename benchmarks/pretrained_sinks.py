"""Attention sinks in a pretrained model: SmolLM2-135M-Instruct's perplexity on KJV verses
concatenated, with its own causal attention, a sliding window, and the window plus the first four
tokens (StreamingLLM, Xiao et al. 2023), swapped in with `attnlab.hf.use`. Perplexity over all
positions and over those past the window, where the programs differ.

    PYTHONPATH=src python benchmarks/pretrained_sinks.py [--window 64] [--json out.json]
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

import attnlab.data
import attnlab.hf

parser = argparse.ArgumentParser()
parser.add_argument("--window", type=int, default=64)
parser.add_argument("--sequences", type=int, default=6)
parser.add_argument("--json")
args = parser.parse_args()
w = args.window

model, tokenizer = attnlab.hf.pretrained("smollm2-135m-instruct")
verses = [ex["source"] for ex in attnlab.data.datasets.read("kjv-spanish")]
ids = tokenizer(" ".join(verses[20_000:23_000]), return_tensors="pt")["input_ids"][0]  # Psalms on
programs = {"causal": "scaled_dot ; causal ; softmax",
            f"causal & window({w})": f"scaled_dot ; causal & window({w}) ; softmax",
            f"causal & (window({w}) | global_tokens(4))":
                f"scaled_dot ; causal & (window({w}) | global_tokens(4)) ; softmax"}
rows = []
for length in (256, 512):
    chunks = ids[: args.sequences * length].view(args.sequences, length)
    for name, program in programs.items():
        attnlab.hf.use(model, program)
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(input_ids=chunks).logits[:, :-1]
        vocab = logits.shape[-1]
        every = F.cross_entropy(logits.reshape(-1, vocab), chunks[:, 1:].reshape(-1))
        past = F.cross_entropy(logits[:, w + 8:].reshape(-1, vocab), chunks[:, w + 9:].reshape(-1))
        rows.append({"length": length, "program": name, "perplexity": math.exp(every.item()),
                     "past_the_window": math.exp(past.item()),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
if args.json:
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
