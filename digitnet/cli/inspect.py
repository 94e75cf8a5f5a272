"""``digitnet inspect``: look inside a trained network, as 3Blue1Brown's chapter on it does.

Six views, each a thin command over ``digitnet.analysis`` (the numbers) and
``digitnet.render`` (the pictures): summary, weights, activations, noise, dream, errors.
Nothing here imports numba: the NumPy forward pass is all they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digitnet.cli.common import dump_json, handle_errors

app = typer.Typer(help="Look inside a trained network: weights, activations, noise, dreams, mistakes.\n\n"
                       "Example:  digitnet inspect weights models/mnist-3b1b.npz",
                  no_args_is_help=True, rich_markup_mode=None)

MODEL_HELP = "Model file [default: $DIGITNET_MODEL or the shipped model]."
SEED_HELP = "Seed for the random images (same model and seed, same output)."


def _model(path: Optional[Path]):
    from digitnet.modelfile import default_model_path, load_model

    return load_model(path or default_model_path())


def _console():
    from digitnet.render import is_plain, make_console

    console = make_console()
    return console, is_plain(console)


def _pct(v) -> str:
    return "—" if v is None else f"{v:.2%}"


# ---------------------------------------------------------------------------------------------
# summary

def summary_command(
    model: Optional[Path] = typer.Argument(None, help=MODEL_HELP),
    test: bool = typer.Option(True, "--test/--no-test", help="Also measure accuracy on the test split of the model's data set now."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Architecture, parameter counts, data set, config, training history and accuracies."""
    from digitnet import analysis

    m = _model(model)
    info = analysis.model_summary(m)
    info["test_accuracy"], info["test_note"] = analysis.test_accuracy(m, measure=test)
    if as_json:
        dump_json(info)
        return
    _render_summary(info)


def _render_summary(info: dict) -> None:
    from rich.table import Table

    from digitnet.render import line_chart

    console, plain = _console()
    arrow = " -> " if plain else " → "
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    hidden = info["activation"] if len(info["sizes"]) > 2 else "no"
    grid.add_row("architecture", f"{arrow.join(map(str, info['sizes']))}  ({hidden} hidden, {info['output']} output, {info['cost']} cost)")
    grid.add_row("parameters", f"{info['parameters']:,}  (" + ", ".join(
        f"W{r['layer']} {r['outputs']}×{r['inputs']} + b{r['layer']}" for r in info["layers"]) + ")")
    ds = info["dataset"]
    if ds:
        grid.add_row("data set", f"{ds.get('spec') or ds.get('name')}: {ds.get('train', 0):,} train / {ds.get('test', 0):,} test"
                     + (f"  {ds['checksum']}" if ds.get("checksum") else ""))
    else:
        grid.add_row("data set", "not recorded")
    cfg = info["config"]
    if cfg:
        grid.add_row("config", ", ".join(f"{k.replace('_', ' ')} {('on' if v else 'off') if isinstance(v, bool) else v}"
                                         for k, v in cfg.items() if k not in ("hidden", "activation", "cost")))
    runs = f"{info['epochs']} epochs" + (f" ({info['stopped']})" if info.get("stopped") else "")
    if info["best_epoch"]:
        runs += f", best epoch {info['best_epoch']} kept"
    if info.get("preset"):
        runs += f", preset {info['preset']}"
    if info.get("created"):
        runs += f", made {info['created']}"
    grid.add_row("training", runs)
    grid.add_row("accuracy", f"train {_pct(info['final_train_accuracy'])} (last epoch), validation {_pct(info['best_val_accuracy'])} "
                             f"(best epoch), test {_pct(info['test_accuracy'])}")
    grid.add_row("", f"test: {info['test_note']}")
    console.print(f"[bold]{Path(info['path']).name}[/]  ({info['path']})")
    console.print(grid)
    h = info["history"]
    if h:
        width = max(20, min(60, console.width - 12))
        loss = [("train", [r.get("loss") for r in h], "cyan", "●", "*"),
                ("validation", [r.get("val_loss") for r in h], "magenta", "○", "o")]
        acc = [("train", [r.get("accuracy") for r in h], "cyan", "●", "*"),
               ("validation", [r.get("val_accuracy") for r in h], "magenta", "○", "o")]
        console.print()
        console.print("[bold]cost per epoch[/]")
        console.print(line_chart(loss, plain, height=6, width=width, fmt=lambda v: f"{v:.4f}"))
        console.print()
        console.print("[bold]accuracy per epoch[/]")
        console.print(line_chart(acc, plain, height=6, width=width, fmt=lambda v: f"{v:.1%}"))


# ---------------------------------------------------------------------------------------------
# weights

def weights_command(
    model: Optional[Path] = typer.Argument(None, help=MODEL_HELP),
    layer: int = typer.Option(1, "--layer", "-l", help="Weight layer: 1 connects the pixels to the first hidden layer, L the last hidden layer to the outputs."),
    neurons: str = typer.Option("0:16", "--neurons", "-n", help="Which neurons of that layer: a range (0:16), a list (1,5,9) or ':' for all."),
    small: bool = typer.Option(False, "--small", help="Layer 1: draw each picture at 14×14 (2×2 averages) so more fit across."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also write the picture as a PNG image (4× enlarged)."),
):
    """Heat maps of the weights: red positive, blue negative (plain: ' ' negative, '=' zero, '@' positive)."""
    import numpy as np

    from digitnet import analysis
    from digitnet.render import diverging_rgb, heatmap, heatmap_grid, image_grid, pool_max_abs, robust_scale, shrink2

    m = _model(model)
    W = analysis.layer_weights(m.network, layer)                   # (n_out, n_in)
    idx = analysis.parse_neurons(neurons, W.shape[0])
    console, plain = _console()
    h, w = m.input_shape
    what = "hidden layer" if layer < m.network.n_layers else "output layer"
    first = "" if layer < m.network.n_layers else " (the outputs)"
    console.print(f"[bold]{Path(m.path).name}[/], layer {layer}: weights into neurons {_ranges(idx)} of {what} "
                  f"{layer}{first}, {W.shape[0]} in all")
    key = "' ' most negative, '=' zero, '@' most positive" if plain else "[blue]blue negative[/], black zero, [red]red positive[/]"
    if layer == 1 and W.shape[1] == h * w:
        maps = W[idx].reshape(-1, h, w)                            # (k, H, W): neuron i's incoming weights as an image
        scales = [robust_scale(mp) for mp in maps]
        console.print(f"Each picture: the {h * w} weights from the pixels into one neuron; {key}; "
                      "full intensity at the neuron's 99th-percentile |w| (the ± by each number).")
        shown = shrink2(maps) if small else maps
        labels = [f"#{i} ±{s:.2g}" for i, s in zip(idx, scales)]
        console.print(heatmap_grid(shown, labels, plain, console.width, [s for s in scales]))
        picture = image_grid(diverging_rgb(maps / np.array(scales)[:, None, None]),
                             cols=int(np.ceil(np.sqrt(len(maps)))), zoom=4, gap=2)
    else:
        rows = W[idx]                                              # (k, n_in)
        shown, k = pool_max_abs(rows, console.width - 2)
        scale = robust_scale(rows)
        console.print(f"Rows: neurons {_ranges(idx)} ({'one' if plain else 'two'} per text line); columns: the {W.shape[1]} "
                      f"inputs from layer {layer - 1}" + (f", each cell the strongest of {k}" if k > 1 else "")
                      + f"; {key}; full intensity at |w| = {scale:.2g}.")
        # plain text draws one character per two rows: doubling the rows gives each neuron its own line
        console.print(heatmap(np.repeat(shown, 2, axis=0) if plain else shown, plain, scale))
        zoom = int(max(2, min(16, 960 // max(rows.shape[1], 1))))
        picture = image_grid(diverging_rgb(rows / scale)[None], cols=1, zoom=zoom, gap=0)
    if png is not None:
        analysis.save_png(picture, png)
        console.print(f"Wrote {png} ({picture.shape[1]}×{picture.shape[0]} pixels)")


def _ranges(idx) -> str:
    """[0, 1, 2, 5] -> '0–2, 5'."""
    parts, start = [], None
    for j, i in enumerate(idx):
        if start is None:
            start = i
        if j + 1 == len(idx) or idx[j + 1] != i + 1:
            parts.append(str(start) if start == i else f"{start}–{i}")
            start = None
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# activations

def activations_command(
    model: Path = typer.Argument(..., help="Model file (e.g. models/digitnet.npz)."),
    image: Optional[Path] = typer.Argument(None, help="An image file (PNG, JPEG…), preprocessed as predict does."),
    index: Optional[int] = typer.Option(None, "--index", "-i", help="Instead of an image: row N of a data set split."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data set for --index [default: the model's own]."),
    split: str = typer.Option("test", "--split", help="test or train (for --index)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with every layer's activations."),
):
    """One forward pass, drawn: the input, each layer's activations, the output scores."""
    import numpy as np

    from digitnet import analysis
    from digitnet.errors import UsageError
    from digitnet.render import activation_cells, digit, labelled, output_bars, tile

    m = _model(model)
    if (image is None) == (index is None):
        raise UsageError("give an image file or --index N (not both)")
    label = None
    if image is not None:
        from digitnet.preprocess import load_image, to_mnist

        if tuple(m.input_shape) != (28, 28):
            raise UsageError(f"image input needs a 28×28 model; this one takes {m.input_shape[0]}×{m.input_shape[1]}: use --index")
        pixels = to_mnist(load_image(image))                       # (28, 28) float32 in [0, 1]
        source = str(image)
    else:
        images, labels, ds = analysis.load_split(m, data, split)
        if not 0 <= index < len(images):
            raise UsageError(f"--index {index}: the {split} split of {ds.name} has rows 0 to {len(images) - 1}")
        pixels, label = images[index].astype(np.float32) / 255, int(labels[index])
        source = f"{ds.name} {split}[{index}]"
    acts = analysis.layer_activations(m, pixels)
    out = acts[-1]
    winner = int(out.argmax())
    if as_json:
        dump_json({"model": m.path, "input": source, "label": label, "predicted": winner, "name": m.class_names[winner],
                   "confidence": float(out[winner]), "sizes": list(m.network.sizes),
                   "activations": [[round(float(v), 6) for v in a] for a in acts[1:]]})
        return
    console, plain = _console()
    relu = m.network.activation == "relu"
    blocks = [labelled("input" + (f" (label {m.class_names[label]})" if label is not None else ""), digit(pixels, plain))]
    for l, a in enumerate(acts[1:-1], start=1):
        top = float(a.max(initial=0)) if relu else 1.0
        blocks.append(labelled(f"layer {l}", activation_cells(a, plain, rows=28, vmax=top or 1.0,
                                                                cell_width=2 if a.size <= 64 else 1), fit=False))
    # the bars shrink (10 down to 4 characters) so that, where possible, the output fits on the same row
    used = sum(max(line.cell_len for line in b.split("\n")) + 2 for b in blocks)
    label_w = max(len(n) if len(n) <= 6 else 6 for n in m.class_names)
    bar_w = max(4, min(10, console.width - used - label_w - 10))
    blocks.append(labelled("output", output_bars(out, m.class_names, plain, width=bar_w), fit=False))
    console.print(f"[bold]{Path(m.path).name}[/] on {source}: "
                  f"{m.class_names[winner]} ({out[winner]:.1%})" + ("" if label is None else
                  ("  [green]right[/]" if label == winner else f"  [red]wrong: it is {m.class_names[label]}[/]")))
    console.print(tile(blocks, console.width, gap=2))
    sizes = ", ".join(f"layer {l}: {len(a)} neurons" for l, a in enumerate(acts[1:-1], start=1))
    shade = "each layer's brightest neuron is white" if relu else "white = 1, black = 0"
    order = "one character per neuron" if plain else "two neurons per character"
    console.print(f"[dim]{sizes}; read down each column ({order}); {m.network.activation}, {shade}.[/]")


# ---------------------------------------------------------------------------------------------
# noise

def noise_command(
    model: Optional[Path] = typer.Argument(None, help=MODEL_HELP),
    samples: int = typer.Option(1000, "--samples", "-n", help="How many noise images."),
    show: int = typer.Option(2, "--show", help="How many of them to draw.", min=0),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Feed pure noise and see the network answer anyway, often confidently."""
    from digitnet import analysis
    from digitnet.render import count_bars, digit_grid

    m = _model(model)
    rep = analysis.noise_experiment(m, samples, seed, keep=show)
    if as_json:
        dump_json({"model": m.path, **rep.to_json(m.class_names)})
        return
    console, plain = _console()
    names = m.class_names
    console.print(f"[bold]{Path(m.path).name}[/] on {samples:,} images of uniform random pixels (seed {seed}):")
    if show:
        labels = [f"→ {names[p]} ({c:.0%})" for p, c in zip(rep.predicted, rep.confidence)]
        console.print(digit_grid(rep.images, labels, plain, console.width))
    console.print()
    console.print("[bold]what it says they are[/]")
    console.print(count_bars(rep.class_counts, names, plain, width=max(10, min(40, console.width - 30))))
    summary = rep.to_json(names)
    console.print(f"mean confidence [bold]{rep.mean_confidence:.1%}[/], median {summary['median_confidence']:.1%}, "
                  f"{summary['share_above_0.9']:.0%} of answers above 90%")
    console.print("[dim]It was never shown 'not a digit': it must pick a class for anything it sees.[/]")


# ---------------------------------------------------------------------------------------------
# dream

def dream_command(
    model: Path = typer.Argument(..., help="Model file (e.g. models/digitnet.npz)."),
    digit: int = typer.Argument(..., help="The class (output neuron) to excite, e.g. 3."),
    steps: int = typer.Option(200, "--steps", help="Gradient-ascent steps."),
    step_size: float = typer.Option(0.05, "--step-size", help="Largest change of any pixel per step."),
    l2: float = typer.Option(0.0, "--l2", help="Penalty on distance from mid-grey (0 = none; try 0.01 for quieter images)."),
    restarts: int = typer.Option(4, "--restarts", help="Starting images tried at once (black, grey, noise…); the best is kept."),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    png: Optional[Path] = typer.Option(None, "--png", help="Also write the image as a PNG (8× enlarged)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """The image the network would most like to see for DIGIT, found by gradient ascent on the pixels."""
    from digitnet import analysis
    from digitnet.render import digit as digit_text
    from digitnet.render import grey_rgb, image_grid, labelled, output_bars, sparkline, tile

    m = _model(model)
    d = analysis.dream(m, digit, steps=steps, step_size=step_size, l2=l2, seed=seed, restarts=restarts)
    picture = image_grid(grey_rgb(d.image)[None], cols=1, zoom=8, gap=0)
    if png is not None:
        analysis.save_png(picture, png)
    if as_json:
        dump_json({"model": m.path, **d.to_json(m.class_names), "png": str(png) if png else None})
        return
    console, plain = _console()
    name = m.class_names[digit]
    console.print(f"[bold]{Path(m.path).name}[/]: the input that most excites output {name} "
                  f"({d.steps} steps of gradient ascent, pixels kept in [0, 1]" + (f", l2 {l2:g}" if l2 else "") + ")")
    console.print(tile([labelled(f"its '{name}'", digit_text(d.image, plain)),
                        labelled("output", output_bars(d.outputs, m.class_names, plain, width=10), fit=False)],
                       console.width, gap=3))
    console.print(f"output {name}: {d.start_probability:.1%} → [bold]{d.probability:.1%}[/]   "
                  f"{sparkline(d.trace, width=min(40, console.width - 40), plain=plain)}")
    verdict = f"is sure this is a '{name}'" if d.probability >= 0.9 else f"only leans towards '{name}' here"
    console.print(f"[dim]The network {verdict}. Does it look like one to you?[/]")
    if png is not None:
        console.print(f"Wrote {png} ({picture.shape[1]}×{picture.shape[0]} pixels)")


# ---------------------------------------------------------------------------------------------
# errors

def errors_command(
    model: Optional[Path] = typer.Argument(None, help=MODEL_HELP),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data set [default: the one the model was trained on]."),
    split: str = typer.Option("test", "--split", help="test or train."),
    limit: int = typer.Option(8, "--limit", "-n", help="How many mistakes to show."),
    small: bool = typer.Option(False, "--small", help="Draw each digit at 14×14 so more fit across."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """The digits the network gets wrong most confidently, with true and predicted labels."""
    from digitnet import analysis
    from digitnet.render import digit_grid, shrink2

    m = _model(model)
    images, labels, ds = analysis.load_split(m, data, split)
    mk = analysis.confident_errors(m, images, labels, limit)
    if as_json:
        dump_json({"model": m.path, "data": data or m.dataset.get("spec") or "embedded", "split": split,
                   **mk.to_json(m.class_names)})
        return
    console, plain = _console()
    names = m.class_names
    console.print(f"[bold]{Path(m.path).name}[/] on the {split} split of {ds.name}: {mk.n_wrong:,} of {mk.n:,} wrong "
                  f"({mk.n_wrong / max(mk.n, 1):.2%}); the {len(mk.index)} most confident mistakes "
                  "(true → predicted, confidence, row):")
    if len(mk.index):
        pics = shrink2(mk.images / 255.0) if small else mk.images
        labels = [f"{names[t]}→{names[p]} {c:.0%} #{i}" for i, t, p, c in zip(mk.index, mk.true, mk.predicted, mk.confidence)]
        console.print(digit_grid(pics, labels, plain, console.width))


# ---------------------------------------------------------------------------------------------

HELP = {
    "summary": ("Architecture, parameters, data set, config, training history chart, accuracies.",
                "digitnet inspect summary models/digitnet.npz\n  digitnet inspect summary --json | jq .parameters"),
    "weights": ("The weights into each neuron: layer 1 as 28×28 heat maps (blue negative, red positive), deeper layers as a matrix.",
                "digitnet inspect weights models/mnist-3b1b.npz --neurons 0:8 --png w.png\n"
                "  digitnet inspect weights models/mnist-3b1b.npz --layer 3"),
    "activations": ("A forward pass drawn: input digit, each layer's activations, output scores.",
                    "digitnet inspect activations models/digitnet.npz my-digit.png\n"
                    "  digitnet inspect activations models/digitnet.npz --index 7"),
    "noise": ("Feed random-noise images: what the network claims to see, and how sure it is.",
              "digitnet inspect noise models/mnist-3b1b.npz --samples 5000 --json"),
    "dream": ("Gradient ascent on the input: the image that most excites one output neuron.",
              "digitnet inspect dream models/digitnet.npz 3 --png three.png"),
    "errors": ("The most confidently wrong test digits, with true and predicted labels.",
               "digitnet inspect errors models/digitnet.npz --limit 12 --small"),
}
COMMANDS = {"summary": summary_command, "weights": weights_command, "activations": activations_command,
            "noise": noise_command, "dream": dream_command, "errors": errors_command}

for _name, _fn in COMMANDS.items():
    _what, _example = HELP[_name]
    app.command(_name, help=f"{_what}\n\n\b\nExample:\n  {_example}")(handle_errors(_fn))
