"""Measure predict on photos: accuracy before/after the photo preprocessing, doubt flag rates, time.

    .venv/bin/python scripts/make_photos.py /tmp/digitnet-photos      # once: the image sets
    .venv/bin/python benchmarks/photo_bench.py [/tmp/digitnet-photos] [--model PATH] [--before REV] [--quick]

Figures (a table, and one JSON object written to benchmarks/results/photo.json):
- accuracy on the photo set, by paper, hand and size, with the preprocessing of git revision
  REV (``--before``, default d2a49ce: the last one before the photo work, loaded from git, so
  it runs with whatever model is shipped now) and with today's;
- the share of each out-of-distribution kind that predict flags (a ``warning``, or an error
  such as "no digit found"), before (the old rule: confidence below 60%) and after;
- the share of clean digits flagged: the clean generated images (tests/digit_images.py), the
  30 shared samples, and the 2,000 embedded MNIST test digits saved as PNG files;
- seconds per photo (image read + preprocessing, the median per size), and the peak memory a
  12-megapixel photo adds (a child process: its peak RSS after minus before).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples" / "user-digits"
BEFORE_REV = "d2a49ce"
sys.path.insert(0, str(ROOT))


def old_preprocess(rev: str) -> types.ModuleType:
    """digitnet/preprocess.py as it was at git revision ``rev``, as a module."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:digitnet/preprocess.py"],
                         capture_output=True, text=True, check=True).stdout
    mod = types.ModuleType(f"preprocess_{rev}")
    exec(compile(src, f"{rev}:digitnet/preprocess.py", "exec"), mod.__dict__)
    return mod


def read_labels(folder: Path) -> list[dict]:
    with open(folder / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def before_rows(model, mod, files: list[Path]) -> list[tuple[int | None, float, bool]]:
    """(label, confidence, flagged) per file with an old preprocessing module: flagged is the old
    rule (an error, or confidence below 60%)."""
    from digitnet.errors import DataError

    xs, ok = [], []
    for f in files:
        try:
            xs.append(mod.to_mnist(mod.load_image(f)))
            ok.append(True)
        except DataError:
            xs.append(np.zeros(model.input_shape, np.float32))
            ok.append(False)
    p = model.scores(np.stack(xs).reshape(len(xs), -1))
    return [(int(q.argmax()), float(q.max()), (not good) or float(q.max()) < 0.6) if good else (None, 0.0, True)
            for q, good in zip(p, ok)]


def after_rows(model, inputs: list[str]) -> list:
    """predict's own rows (with their warnings) for the inputs."""
    from digitnet.predict import predict_inputs

    return list(predict_inputs(model, inputs, top_k=1))


def flagged(row) -> bool:
    return row.error is not None or getattr(row, "warning", None) is not None


def by(values: list[tuple[str, bool]]) -> dict[str, dict]:
    """{group: {"n", "rate"}} for (group, hit) pairs, plus "all"."""
    groups = defaultdict(list)
    for g, hit in values:
        groups[g].append(hit)
        groups["all"].append(hit)
    return {g: {"n": len(v), "rate": round(sum(v) / len(v), 4)} for g, v in sorted(groups.items())}


def peak_memory(photo: Path) -> dict:
    """What reading and preprocessing one photo costs in a fresh process: the peak of NumPy's
    and Python's allocations during the call (tracemalloc, which NumPy reports to), the peak
    RSS after the call and before it (after the imports and a warm-up on a small image), and
    the seconds."""
    code = ("import resource, sys, time, tracemalloc\n"
            "import numpy as np\n"
            "from digitnet.preprocess import load_image, to_mnist\n"
            "to_mnist(np.pad(np.zeros((20, 8), np.float32), 10, constant_values=1))\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "tracemalloc.start()\n"
            "t = time.perf_counter()\n"
            "try:\n"
            "    to_mnist(load_image(sys.argv[1]))\n"
            "except Exception:\n"
            "    pass\n"
            "dt = time.perf_counter() - t\n"
            "heap = tracemalloc.get_traced_memory()[1]\n"
            "print(base * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, heap, dt)")
    # through a small wrapper process: a child forked straight from this one would start with
    # this process's peak RSS (Linux keeps ru_maxrss across fork and exec)
    wrapper = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    out = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-c", code, str(photo)], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout.split()
    base, peak, heap, dt = int(out[0]), int(out[1]), int(out[2]), float(out[3])
    return {"file": photo.name, "heap_peak_bytes": heap, "rss_before_bytes": base, "rss_peak_bytes": peak,
            "seconds_cold_process": round(dt, 3)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="?", default="/tmp/digitnet-photos", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--before", default=BEFORE_REV, help="git revision whose preprocessing is 'before'")
    parser.add_argument("--quick", action="store_true", help="every fourth image only; no memory run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "photo.json")
    args = parser.parse_args(argv)

    from digitnet.datasets import load_dataset
    from digitnet.errors import DataError
    from digitnet.modelfile import default_model_path, load_model
    from digitnet.preprocess import load_image, to_mnist

    model = load_model(args.model or default_model_path())
    old = old_preprocess(args.before)
    step = 4 if args.quick else 1
    photos = read_labels(args.sets / "photos")[::step]
    ood = read_labels(args.sets / "ood")[::step]
    clean = read_labels(args.sets / "clean")[::step]
    result: dict = {"model": str(model.path), "before": args.before,
                    "git": subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", "models/"],
                                          capture_output=True, text=True).stdout.strip()}

    # accuracy on photos, before and after
    files = [args.sets / "photos" / r["file"] for r in photos]
    truth = [int(r["label"]) for r in photos]
    before = before_rows(model, old, files)
    after = after_rows(model, [str(f) for f in files])
    acc = {}
    for key in ("paper", "hand", "desk", "megapixels"):
        acc[key] = {"before": by([(r[key], b[0] == t) for r, b, t in zip(photos, before, truth)]),
                    "after": by([(r[key], a.label == t) for r, a, t in zip(photos, after, truth)])}
    result["photos"] = acc
    result["photos_flagged"] = {"before": by([("all", b[2]) for b in before]),
                                "after": by([("all", flagged(a)) for a in after]),
                                "after_wrong_flagged": by([("all", flagged(a)) for a, t in zip(after, truth) if a.label != t]),
                                "after_warnings": dict(sorted(_count(w for a in after if flagged(a)
                                                                     for w in (a.warning or a.error).split("; ")).items()))}

    # out-of-distribution: flagged share by kind
    files = [args.sets / "ood" / r["file"] for r in ood]
    before = before_rows(model, old, files)
    after = after_rows(model, [str(f) for f in files])
    result["ood"] = {"before": by([(r["kind"], b[2]) for r, b in zip(ood, before)]),
                     "after": by([(r["kind"], flagged(a)) for r, a in zip(ood, after)]),
                     "reasons": dict(sorted(_count(w for a in after if flagged(a)
                                                   for w in (a.warning or "no digit found (an error)").split("; ")).items())),
                     "missed": [f"{r['file']} ({r['what']}) read {a.label} at {a.confidence:.0%}"
                                for r, a in zip(ood, after) if not flagged(a)]}

    # clean digits: flagged share (and accuracy, to see nothing regressed)
    clean_rows = after_rows(model, [str(args.sets / "clean" / r["file"]) for r in clean])
    sample_labels = {r["file"]: int(r["label"]) for r in read_labels(SAMPLES)}
    sample_rows = after_rows(model, [str(SAMPLES / f) for f in sorted(sample_labels)])
    test = load_dataset("embedded")
    mnist_dir = mnist_pngs(test.test_images[::step])
    mnist_rows = after_rows(model, [str(mnist_dir)])
    result["clean"] = {
        "generated": {"n": len(clean_rows), "flagged": _rate(flagged(r) for r in clean_rows),
                      "accuracy": _rate(r.label == int(c["label"]) for r, c in zip(clean_rows, clean))},
        "samples": {"n": len(sample_rows), "flagged": _rate(flagged(r) for r in sample_rows),
                    "correct": sum(r.label == sample_labels[Path(r.input).name] for r in sample_rows)},
        "mnist_test": {"n": len(mnist_rows), "flagged": _rate(flagged(r) for r in mnist_rows),
                       "accuracy": _rate(r.label == int(t) for r, t in zip(mnist_rows, test.test_labels[::step]))},
        "warnings": dict(sorted(_count(w for r in clean_rows + sample_rows + mnist_rows if flagged(r)
                                       for w in (r.warning or r.error).split("; ")).items())),
    }
    all_clean = clean_rows + sample_rows + mnist_rows
    result["clean"]["all"] = {"n": len(all_clean), "flagged": _rate(flagged(r) for r in all_clean)}

    # time per photo, by size (read + preprocess, in this process, warm)
    times = defaultdict(list)
    for r in photos:
        f = args.sets / "photos" / r["file"]
        t = time.perf_counter()
        try:
            to_mnist(load_image(f))
        except DataError:
            pass                                       # "no digit found" takes as long to say
        times[r["megapixels"]].append(time.perf_counter() - t)
    result["seconds_per_photo"] = {mp: {"n": len(v), "median": round(statistics.median(v), 4), "max": round(max(v), 4)}
                                   for mp, v in sorted(times.items(), key=lambda kv: float(kv[0]))}
    if not args.quick:
        big = [args.sets / "photos" / r["file"] for r in photos if float(r["megapixels"]) >= 12][:3]
        result["memory_12mp"] = [peak_memory(f) for f in big]
        result["memory_12mp_png"] = _png_memory(big[0]) if big else None

    result["load"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    report(result)
    if not args.quick:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.out)
    return result


def mnist_pngs(images: np.ndarray) -> Path:
    """The MNIST test digits as PNG files (white on black, 28×28, as MNIST stores them) in a
    folder under /tmp, named in order, so predict reads them as images (preprocessing and
    every doubt rule) rather than as an array."""
    from PIL import Image

    folder = Path("/tmp") / f"photo-bench-mnist-{len(images)}"
    if not (folder / f"{len(images) - 1:05d}.png").exists():
        folder.mkdir(exist_ok=True)
        for i, x in enumerate(images):
            Image.fromarray(x).save(folder / f"{i:05d}.png")
    return folder


def _png_memory(jpeg: Path) -> dict:
    """The same 12 MP photo as a PNG (no JPEG draft decoding to help): time and memory."""
    from PIL import Image

    png = Path("/tmp") / (jpeg.stem + "-12mp.png")
    if not png.exists():
        Image.open(jpeg).save(png, compress_level=1)
    return peak_memory(png)


def _count(values) -> dict:
    out: dict = defaultdict(int)
    for v in values:
        out[str(v)] += 1
    return out


def _rate(hits) -> float:
    hits = list(hits)
    return round(sum(hits) / max(1, len(hits)), 4)


def report(r: dict) -> None:
    print(f"model {r['model']} (models/ at {r['git']}); before = preprocessing of {r['before']}")
    print("\naccuracy on photos      before   after     n")
    for key, parts in r["photos"].items():
        for g, v in parts["after"].items():
            if g == "all" and key != "paper":
                continue
            print(f"  {key + ' ' + g:20s} {parts['before'][g]['rate']:7.1%} {v['rate']:7.1%} {v['n']:5d}")
    pf = r["photos_flagged"]
    print(f"  photos flagged: before {pf['before']['all']['rate']:.1%}, after {pf['after']['all']['rate']:.1%}; "
          f"wrong answers flagged after: {pf['after_wrong_flagged'].get('all', {}).get('rate', 0):.0%}")
    print("\nout-of-distribution flagged  before   after     n")
    for g, v in r["ood"]["after"].items():
        print(f"  {g:26s} {r['ood']['before'][g]['rate']:7.1%} {v['rate']:7.1%} {v['n']:5d}")
    print(f"  reasons: {r['ood']['reasons']}")
    c = r["clean"]
    print("\nclean digits flagged")
    print(f"  generated {c['generated']['flagged']:.1%} of {c['generated']['n']} (accuracy {c['generated']['accuracy']:.1%}); "
          f"samples {c['samples']['flagged']:.1%} ({c['samples']['correct']}/{c['samples']['n']} right); "
          f"MNIST test {c['mnist_test']['flagged']:.1%} of {c['mnist_test']['n']} (accuracy {c['mnist_test']['accuracy']:.1%}); "
          f"all {c['all']['flagged']:.1%}")
    print(f"  warnings: {c['warnings']}")
    print("\nseconds per photo (read + preprocess): " + ", ".join(
        f"{mp} MP {v['median']:.3f} (max {v['max']:.3f})" for mp, v in r["seconds_per_photo"].items()))
    for m in (r.get("memory_12mp") or []) + ([r["memory_12mp_png"]] if r.get("memory_12mp_png") else []):
        print(f"  12 MP {m['file']}: {m['seconds_cold_process']:.2f} s; NumPy/Python heap peak "
              f"{m['heap_peak_bytes'] / 2**20:.0f} MiB; RSS {m['rss_before_bytes'] / 2**20:.0f} -> "
              f"{m['rss_peak_bytes'] / 2**20:.0f} MiB")
    print(f"  (machine load during the run: {r.get('load', '?')})")


if __name__ == "__main__":
    main()
