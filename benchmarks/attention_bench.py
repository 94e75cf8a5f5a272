"""Training speed of digitnet's vision transformer side by side with PyTorch CPU's
``nn.TransformerEncoder`` of the same shape (issue 11), in one run, on the same data.

Both networks are the same: 7×7 (or 4×4) patches to 64-wide tokens, a class token and learned
position embeddings, 4 pre-norm blocks of 4 heads with an MLP 256 wide (GELU, tanh form), a
final LayerNorm on the class token, a dense head with softmax/cross-entropy; Adam with
decoupled weight decay (AdamW). PyTorch starts from digitnet's weights, and the two forward
passes are checked to agree before anything is timed.

Each workload runs a few hundred mini-batches per implementation, the implementations taking
turns (so a change of load hits both alike), three times, at 1 and 2 threads; the table
shows the median samples/s and the ratios. digitnet's step is the training loop's own
(``training._LayerSteps``: the chain rule with the compiled stand-ins of ``conv_kernels.FAST``
and ``attention_kernels.FAST``, as ``training.train`` merges them, then the compiled Adam step
training takes, ``optim_kernels.FAST["adam"]``).

    .venv/bin/python benchmarks/attention_bench.py            # everything (a few minutes)
    .venv/bin/python benchmarks/attention_bench.py --quick    # one repeat, fewer batches

The machine is shared: absolute figures move with its load (printed), ratios within one run
much less. Compare the 1-thread columns when the load average is above ~1.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


@dataclass(frozen=True)
class Workload:
    patch: int
    batch: int
    dim: int = 64
    blocks: int = 4
    heads: int = 4

    @property
    def layers(self) -> str:
        return ",".join([f"patch{self.patch}x{self.dim}"] + [f"block{self.heads}"] * self.blocks)

    @property
    def name(self) -> str:
        return f"patch {self.patch} ({(28 // self.patch) ** 2} patches), dim {self.dim}, {self.blocks}×{self.heads} heads, batch {self.batch}"


WORKLOADS = (Workload(7, 32), Workload(7, 128), Workload(4, 32), Workload(4, 128))
LR, DECAY = 1e-3, 0.05


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# ---------------------------------------------------------------------------------- digitnet
class Digitnet:
    def __init__(self, w: Workload):
        from digitnet.attention_kernels import FAST as ATTENTION_FAST
        from digitnet.conv_kernels import FAST as CONV_FAST
        from digitnet.nn.network import Network
        from digitnet.nn.spec import architecture, parse_layers
        from digitnet.optim_kernels import FAST as OPTIM_FAST
        from digitnet.training import _LayerSteps

        layers = architecture(parse_layers(w.layers), (1, 28, 28), 10, "softmax")
        self.net = Network.init(layers, (1, 28, 28), seed=0)
        self.initial = self.net.params.copy()
        opt = OPTIM_FAST["adam"](self.net.n_params, 0.0, DECAY, self.net.decay_mask())    # training's Adam
        self.steps = _LayerSteps(self.net, opt, w.batch, {**CONV_FAST, **ATTENTION_FAST})
        self.batch = w.batch

    def run(self, x, y, order, first, last, threads) -> float:
        from threadpoolctl import threadpool_limits

        from digitnet.conv_kernels import set_threads

        set_threads(threads)
        stats = np.zeros(2)
        with threadpool_limits(threads, user_api="blas"):
            t = time.perf_counter()
            self.steps.run(x, y, order, first, last, LR, stats, None)
            return time.perf_counter() - t


# ---------------------------------------------------------------------------------- PyTorch
class Torch:
    def __init__(self, w: Workload, net):
        import torch
        from torch import nn
        from torch.nn import functional as F

        torch.manual_seed(0)
        D, P, T = w.dim, w.patch, (28 // w.patch) ** 2 + 1

        class ViT(nn.Module):
            def __init__(self):
                super().__init__()
                self.patch = nn.Conv2d(1, D, P, stride=P)
                self.cls = nn.Parameter(torch.zeros(D))
                self.pos = nn.Parameter(torch.zeros(T, D))
                layer = nn.TransformerEncoderLayer(D, w.heads, 4 * D, dropout=0.0, batch_first=True, norm_first=True,
                                                   activation=functools.partial(F.gelu, approximate="tanh"))
                self.encoder = nn.TransformerEncoder(layer, w.blocks, enable_nested_tensor=False)
                self.norm = nn.LayerNorm(D)
                self.head = nn.Linear(D, 10)

            def forward(self, x):
                e = self.patch(x).flatten(2).transpose(1, 2)                      # (m, T − 1, D)
                tokens = torch.cat([self.cls.expand(len(x), 1, D), e], dim=1) + self.pos
                return self.head(self.norm(self.encoder(tokens)[:, 0]))

        self.torch = torch
        self.model = ViT()
        self._copy_weights(net)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=DECAY)
        self.loss = nn.CrossEntropyLoss()

    def _copy_weights(self, net):
        """digitnet's starting weights into the PyTorch model (same layouts: W (out, in), qkv rows q, k, v)."""
        torch = self.torch
        v = net.views
        sd = {"patch.weight": v[0]["W"], "patch.bias": v[0]["b"], "cls": v[0]["cls"], "pos": v[0]["pos"],
              "norm.weight": v[-3]["gamma"], "norm.bias": v[-3]["beta"], "head.weight": v[-2]["W"], "head.bias": v[-2]["b"]}
        for i in range(len(v) - 4):
            p, pre = v[1 + i], f"encoder.layers.{i}."
            sd.update({pre + "norm1.weight": p["ln1_gamma"], pre + "norm1.bias": p["ln1_beta"],
                       pre + "self_attn.in_proj_weight": p["W_qkv"], pre + "self_attn.in_proj_bias": p["b_qkv"],
                       pre + "self_attn.out_proj.weight": p["W_o"], pre + "self_attn.out_proj.bias": p["b_o"],
                       pre + "norm2.weight": p["ln2_gamma"], pre + "norm2.bias": p["ln2_beta"],
                       pre + "linear1.weight": p["W_1"], pre + "linear1.bias": p["b_1"],
                       pre + "linear2.weight": p["W_2"], pre + "linear2.bias": p["b_2"]})
        self.model.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in sd.items()})

    def forward(self, x):
        with self.torch.no_grad():
            return self.torch.softmax(self.model(self.torch.from_numpy(x)), dim=1).numpy()

    def run(self, x, y, order, first, last, threads, bs) -> float:
        torch = self.torch
        torch.set_num_threads(threads)
        X, Y, idx = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(order)
        self.model.train()
        t = time.perf_counter()
        for b in range(first, last):
            rows = idx[b * bs:(b + 1) * bs]
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.model(X[rows]), Y[rows])
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t


# ---------------------------------------------------------------------------------- the run
def bench(w: Workload, x, y, repeats: int, samples: int, threads_list) -> dict:
    d = Digitnet(w)
    t = Torch(w, d.net)
    probe = x[:64]
    gap = float(np.abs(d.net.predict_proba(probe.reshape(64, -1)) - t.forward(probe)).max())
    assert gap < 1e-4, f"the two networks disagree before training ({gap})"
    n_batches = max(4, samples // w.batch)
    order = np.random.default_rng(0).permutation(len(x)).astype(np.int64)
    per_batch = len(x) // w.batch
    rates = {}
    for threads in threads_list:
        d.run(x, y, order, 0, 2, threads)                 # compile / warm up
        t.run(x, y, order, 0, 2, threads, w.batch)
        got = {"digitnet": [], "torch": []}
        for r in range(repeats):
            first = (r * n_batches) % max(1, per_batch - n_batches)
            got["digitnet"].append(n_batches * w.batch / d.run(x, y, order, first, first + n_batches, threads))
            got["torch"].append(n_batches * w.batch / t.run(x, y, order, first, first + n_batches, threads, w.batch))
        rates[threads] = {k: statistics.median(v) for k, v in got.items()}
    return {"gap": gap, "params": d.net.n_params, "rates": rates}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat of fewer batches")
    ap.add_argument("--threads", default="1,2", help="thread counts to run, e.g. 1 or 1,2 (default)")
    ap.add_argument("--only", default="", help="run the workloads whose name contains this, e.g. 'patch 7'")
    args = ap.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    repeats, samples = (1, 2048) if args.quick else (3, 6144)

    from digitnet.datasets import load_dataset
    from digitnet.nn.functions import to_unit_float

    data = load_dataset("embedded+fonts")
    x = to_unit_float(data.train_images).reshape(-1, 1, 28, 28)
    y = data.train_labels.astype(np.int64)
    import torch

    print(f"digitnet vision transformer vs PyTorch {torch.__version__} CPU TransformerEncoder, "
          f"{os.cpu_count()} cores; load average at start {load_average()}")
    print("| workload | threads | digitnet samples/s | PyTorch samples/s | digitnet / PyTorch |")
    print("|---|---|---|---|---|")
    results = {}
    for w in WORKLOADS:
        if args.only and args.only not in w.name:
            continue
        r = results[w.name] = bench(w, x, y, repeats, samples, threads_list)
        for th, rate in r["rates"].items():
            print(f"| {w.name} | {th} | {rate['digitnet']:,.0f} | {rate['torch']:,.0f} | "
                  f"{rate['digitnet'] / rate['torch']:.2f}× |", flush=True)
        best_d = max(v["digitnet"] for v in r["rates"].values())
        best_t = max(v["torch"] for v in r["rates"].values())
        print(f"| {w.name} | best | {best_d:,.0f} | {best_t:,.0f} | {best_d / best_t:.2f}× |", flush=True)
    print(f"\nload average at the end {load_average()}; {next(iter(results.values()))['params']:,} parameters "
          "(patch 7); forward passes agreed before training to within "
          f"{max(r['gap'] for r in results.values()):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
