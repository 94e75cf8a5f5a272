"""``digitnet inspect``: look inside a trained network, as 3Blue1Brown's chapter on it does.

Six views, each a thin command over ``digitnet.analysis`` (the numbers) and
``digitnet.render`` (the pictures): summary, weights, activations, noise, dream, errors; and
two for transformers, attention and mlp, from ``digitnet.cli.inspect_attention``.
Nothing here imports numba: the NumPy forward pass is all they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from digitnet.cli.common import Command, dump_json, handle_errors, load_model_for, model_option, one_of

app = typer.Typer(help="Look inside a trained network: weights, activations, noise, dreams, mistakes, "
                       "a transformer's attention and MLP neurons.\n\n"
                       "Example:  digitnet inspect weights -m models/mnist-3b1b.npz",
                  no_args_is_help=True, rich_markup_mode=None)

OLD_MODEL_HELP = "The model (as --model; the older spelling)."
SEED_HELP = "Seed for the random images (same model and seed, same output)."
SPLITS = ("test", "train")


def _model(*given: Optional[Path]):
    return load_model_for(*given)


def _model_then(args: list[str], what: str, takes_model_alone: bool = False) -> tuple[str | None, str | None]:
    """(model, the other argument) from ``[MODEL] WHAT``: the model first is the older
    spelling of --model (scripts may use it); one argument is WHAT, unless it names a model
    file (.npz) or ``takes_model_alone`` (WHAT is given some other way, e.g. --index)."""
    from digitnet.errors import UsageError

    if len(args) > 2:
        raise UsageError(f"too many arguments ({' '.join(args)}): give [MODEL] {what}, or --model MODEL {what}")
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1 and (takes_model_alone or args[0].lower().endswith(".npz")):
        return args[0], None
    return None, (args[0] if args else None)


def _names(m) -> list[str]:
    """The model's class names, safe to print (a class name is data, never markup)."""
    from digitnet.termtext import terminal_safe

    return [terminal_safe(n) for n in m.class_names]


def _console():
    from digitnet.render import is_plain, make_console

    console = make_console()
    return console, is_plain(console)


def _wrap_tokens(spec: str, width: int) -> list[str]:
    """'conv6x5p2:relu,pool2,…' as lines of at most ``width`` characters, broken after commas."""
    lines = [""]
    for token in spec.split(","):
        if lines[-1] and len(lines[-1]) + len(token) + 1 > width:
            lines.append("")
        lines[-1] += token + ","
    lines[-1] = lines[-1][:-1]
    return lines


def _pct(v) -> str:
    return "—" if v is None else f"{v:.2%}"


# ---------------------------------------------------------------------------------------------
# summary

def summary_command(
    model_arg: Optional[Path] = typer.Argument(None, metavar="[MODEL]", help=OLD_MODEL_HELP),
    model: Optional[Path] = model_option(),
    test: Optional[bool] = typer.Option(None, "--test/--no-test",
                                        help="--test: measure the accuracy on the test split of the model's data set "
                                             "now; --no-test: never [default: the accuracy recorded when it was "
                                             "trained, else measured now]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Architecture, a table of the layers (output shape and parameters of each, as Keras'
    model.summary()), data set, config, training history and accuracies."""
    import dataclasses

    from digitnet import analysis

    m = _model(model_arg, model)
    info = analysis.model_summary(m)
    if test:            # measured now, whatever the file recorded
        fresh = dataclasses.replace(m, meta={k: v for k, v in m.meta.items() if k != "test_accuracy"})
        info["test_accuracy"], info["test_note"] = analysis.test_accuracy(fresh, measure=True)
    else:
        info["test_accuracy"], info["test_note"] = analysis.test_accuracy(m, measure=test is None)
    if as_json:     # "model" as every command names it; "path", its older name, for scripts that read it
        dump_json({"model": info["path"], **info})
        return
    _render_summary(info)


def _render_summary(info: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from digitnet.render import LAYER_TABLE_STEPS, fit_table, layer_table, line_chart, terminal_safe

    console, plain = _console()
    arrow = " -> " if plain else " → "
    grid = Table.grid(padding=(0, 2))        # in a pipe: a line per row, however long
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(name: str, value) -> None:      # values may hold user text: never markup; a list: lines of it
        lines = value if isinstance(value, list) else [value]
        grid.add_row(name, Text("\n".join(terminal_safe(line) for line in lines)))

    h, w = info["input_shape"]
    if info["sizes"]:
        hidden = info["activation"] if len(info["sizes"]) > 2 else "no"
        row("architecture", f"{arrow.join(map(str, info['sizes']))}  ({hidden} hidden, {info['output']} output, {info['cost']} cost)")
    else:
        # the --layers text on lines of its own, broken after commas rather than inside a token
        row("architecture", _wrap_tokens(info["architecture"], console.width - 16)
            + [f"{h}×{w} in, {len(info['class_names'])} {info['output']} out, {info['cost']} cost"])
    weights, biases, other = (sum(r[kind] for r in info["layers"]) for kind in ("weights", "biases", "other"))
    others = f", {other:,} other: LayerNorms, class token, positions" if other else ""
    row("parameters", f"{info['parameters']:,}  ({weights:,} weights, {biases:,} biases{others}; per layer below)")
    ds = info["dataset"]
    if ds:
        row("data set", f"{ds.get('spec') or ds.get('name')}: {ds.get('train', 0):,} train / {ds.get('test', 0):,} test"
                        + (f"  {ds['checksum']}" if ds.get("checksum") else ""))
    else:
        row("data set", "not recorded")
    cfg = info["config"]
    if cfg:
        row("config", ", ".join(f"{k.replace('_', ' ')} {('on' if v else 'off') if isinstance(v, bool) else v}"
                                for k, v in cfg.items() if k not in ("hidden", "layers", "activation", "cost")))
    runs = f"{info['epochs']} epochs" + (f" ({info['stopped']})" if info.get("stopped") else "")
    if info["best_epoch"]:
        runs += f", best epoch {info['best_epoch']} kept"
    if info.get("preset"):
        runs += f", preset {info['preset']}"
    if info.get("created"):
        runs += f", made {info['created']}"
    row("training", runs)
    row("accuracy", f"train {_pct(info['final_train_accuracy'])} (last epoch), validation {_pct(info['best_val_accuracy'])} "
                    f"(best epoch), test {_pct(info['test_accuracy'])}")
    row("", f"test: {info['test_note']}")
    console.print(Text.assemble((terminal_safe(Path(info["path"]).name), "bold"), f"  ({terminal_safe(info['path'])})"))
    console.print(grid)
    console.print()
    console.print(Text("layers", style="bold"))
    console.print(fit_table(console, lambda k: layer_table(info["layers"], plain, k), LAYER_TABLE_STEPS))
    h = info["history"]
    if h:
        width = max(20, min(60, console.width - 12))
        epochs = [r.get("epoch") for r in h]
        best = epochs.index(info["best_epoch"]) + 1 if info["best_epoch"] in epochs else None
        loss = [("train", [r.get("loss") for r in h], "cyan", "●", "*"),
                ("validation", [r.get("val_loss") for r in h], "magenta", "○", "o")]
        acc = [("train", [r.get("accuracy") for r in h], "cyan", "●", "*"),
               ("validation", [r.get("val_accuracy") for r in h], "magenta", "○", "o")]
        console.print()
        console.print(Text("cost per epoch", style="bold"))
        console.print(line_chart(loss, plain, height=8, width=width, fmt=lambda v: f"{v:.4f}", scale="log", best=best))
        console.print()
        console.print(Text("accuracy per epoch", style="bold"))
        console.print(line_chart(acc, plain, height=8, width=width, fmt=lambda v: f"{v:.2%}", scale="error-log",
                                 best=best))
        note = ("train: measured during each epoch while the weights change"
                + (", on the augmented images (shifted, rotated, rescaled)" if (info["config"] or {}).get("augment") else "")
                + "; validation: after the epoch, on the images as they are.")
        console.print(Text(note, style="dim"))


# ---------------------------------------------------------------------------------------------
# weights

def weights_command(
    model_arg: Optional[Path] = typer.Argument(None, metavar="[MODEL]", help=OLD_MODEL_HELP),
    model: Optional[Path] = model_option(),
    layer: int = typer.Option(1, "--layer", "-l", metavar="L",
                              help="Weight layer, counting only layers with weights (summary's W1, W2…): "
                                   "1 sees the pixels, L gives the outputs."),
    neurons: str = typer.Option("0:16", "--neurons", metavar="RANGE",
                                help="Which neurons (dense) or filters (conv) of that layer: "
                                     "a range (0:16), a list (1,5,9) or ':' for all."),
    neurons_n: Optional[str] = typer.Option(None, "-n", hidden=True),      # the older spelling of --neurons
    channels: Optional[str] = typer.Option(None, "--channels", "-c", metavar="RANGE", help="Deeper conv layer: which input channels to draw "
                                                                         "per filter, as --neurons [default: as many as fit; "
                                                                         "--png: all]."),
    small: bool = typer.Option(False, "--small", help="Dense layer 1: draw each picture at 14×14 (2×2 averages) so more fit across."),
    png: Optional[Path] = typer.Option(None, "--png", metavar="FILE", help="Also write the picture as a PNG image (enlarged)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace the --png file if it exists (never the model itself)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: the weights of the neurons chosen."),
):
    """Heat maps of the weights: red positive, blue negative (plain: ' ' negative, '=' zero, '@' positive).

    A dense layer that sees the pixels: one 28×28 picture per neuron. A first conv layer: one
    k×k picture per filter. A deeper conv layer (C input channels): one row per filter, its
    k×k weights on each input channel side by side (not averaged: the channels differ). Other
    dense layers: a matrix, one row per neuron."""
    from digitnet import analysis
    from digitnet.cli.common import same_or_either

    m = _model(model_arg, model)
    if png is not None:                 # said before anything is drawn, not after
        from digitnet.atomic import check_target

        check_target(png, force, [m.path], "--png")
    neurons = same_or_either("--neurons", None if neurons == "0:16" else neurons, neurons_n) or neurons
    W = analysis.layer_weights(m.network, layer)                   # dense (n_out, n_in); conv (F, C, k, k)
    n_layers = len(analysis.learned_layers(m.network))
    if as_json:
        idx = analysis.parse_neurons(neurons, W.shape[0], what="filters" if W.ndim == 4 else "neurons")
        at = analysis.weight_layer_index(m.network, layer)
        dump_json({"model": m.path, "layer": layer, "name": m.network.layers[at].describe(),
                   "type": "conv" if W.ndim == 4 else "dense", "shape": list(W.shape), "neurons": idx.tolist(),
                   "weights": [[round(float(v), 6) for v in W[i].ravel()] for i in idx],
                   "bias": [round(float(m.network.views[at]["b"][i]), 6) for i in idx] if "b" in m.network.views[at] else None})
        return
    console, plain = _console()
    plot = _conv_weights if W.ndim == 4 else _dense_weights
    picture = plot(m, W, layer, n_layers, neurons, channels, small, console, plain)
    if png is not None:
        analysis.save_png(picture, png, force=force, inputs=[m.path])
        console.print(f"Wrote {_safe(png)} ({picture.shape[1]}×{picture.shape[0]} pixels)")


def _key(plain: bool) -> str:
    return "' ' most negative, '=' zero, '@' most positive" if plain else "[blue]blue negative[/], black zero, [red]red positive[/]"


def _dense_weights(m, W, layer, n_layers, neurons, channels, small, console, plain):
    """Print a dense layer's weights (n_out, n_in); return the picture for --png."""
    import numpy as np

    from digitnet import analysis
    from digitnet.render import diverging_rgb, heatmap, heatmap_grid, image_grid, pool_max_abs, robust_scale, shape_text, shrink2

    idx = analysis.parse_neurons(neurons, W.shape[0])
    h, w = m.input_shape
    what = "hidden layer" if layer < n_layers else "output layer"
    first = "" if layer < n_layers else " (the outputs)"
    at = analysis.weight_layer_index(m.network, layer)
    console.print(f"[bold]{_safe(Path(m.path).name)}[/], layer {layer} ({m.network.layers[at].describe()}): weights into "
                  f"neurons {_ranges(idx)} of {what} {layer}{first}, {W.shape[0]} in all")
    source, shape = analysis.feeds(m.network, at)
    if source == "input" and W.shape[1] == h * w:
        maps = W[idx].reshape(-1, h, w)                            # (k, H, W): neuron i's incoming weights as an image
        scales = [robust_scale(mp) for mp in maps]
        console.print(f"Each picture: the {h * w} weights from the pixels into one neuron; {_key(plain)}; "
                      "full intensity at the neuron's 99th-percentile |w| (the ± by each number).")
        shown = shrink2(maps) if small else maps
        labels = [f"#{i} ±{s:.2g}" for i, s in zip(idx, scales)]
        console.print(heatmap_grid(shown, labels, plain, console.width, scales))
        return image_grid(diverging_rgb(maps / np.array(scales)[:, None, None]),
                          cols=int(np.ceil(np.sqrt(len(maps)))), zoom=4, gap=2)
    rows = W[idx]                                                  # (k, n_in)
    shown, k = pool_max_abs(rows, console.width - 2)
    scale = robust_scale(rows)
    inputs = (f"the {W.shape[1]} inputs: {source}'s {shape[0]} maps of {shape_text(shape[1:])}, flattened"
              if len(shape) == 3 and source != "input" else f"the {W.shape[1]} inputs from layer {layer - 1}")
    console.print(f"Rows: neurons {_ranges(idx)} ({'one' if plain else 'two'} per text line); columns: {inputs}"
                  + (f", each cell the strongest of {k}" if k > 1 else "")
                  + f"; {_key(plain)}; full intensity at |w| = {scale:.2g}.")
    # plain text draws one character per two rows: doubling the rows gives each neuron its own line
    console.print(heatmap(np.repeat(shown, 2, axis=0) if plain else shown, plain, scale))
    zoom = int(max(2, min(16, 960 // max(rows.shape[1], 1))))
    return image_grid(diverging_rgb(rows / scale)[None], cols=1, zoom=zoom, gap=0)


def _conv_weights(m, W, layer, n_layers, neurons, channels, small, console, plain):
    """Print a conv layer's filters (F, C, k, k); return the picture for --png."""
    import numpy as np

    from digitnet import analysis
    from digitnet.errors import UsageError
    from digitnet.render import diverging_rgb, enlarge, filter_rows, heatmap_grid, image_grid, robust_scale, shape_text

    F, C, k, _ = W.shape
    idx = analysis.parse_neurons(neurons, F, what="filters")
    zoom = 2 if k <= 16 else 1                                     # 2: one character pair per weight, also in plain text
    at = analysis.weight_layer_index(m.network, layer)
    source, shape = analysis.feeds(m.network, at)
    scales = [robust_scale(W[f]) for f in idx]                     # per filter, over all its channels
    label_w = max(len(f"#{i} ±{s:.2g}") for i, s in zip(idx, scales)) + 2
    fit = max(1, (console.width - label_w) // (k * zoom + 1))      # channels across the screen
    chans = analysis.parse_neurons(channels if channels is not None else f"0:{fit}", C, "--channels", "input channels")
    if C > 1 and len(chans) > fit:
        raise UsageError(f"--channels {channels}: {len(chans)} channels do not fit {console.width} columns "
                         f"(at most {fit}); --png draws them all")
    name = _safe(Path(m.path).name)
    seen = "the image" if source == "input" else f"{source}'s {C} maps of {shape_text(shape[1:])}"
    how = (f"applied to each {k}×{k} patch of the image in turn (stride {k}): a patch's token starts as these {F} "
           "numbers" if m.network.layers[at].type == "patch" else f"slid over {seen}")
    console.print(f"[bold]{name}[/], layer {layer} ({m.network.layers[at].describe()}): filters {_ranges(idx)} of {F}, "
                  f"each {C}×{k}×{k}, {how}")
    if C == 1:
        maps = W[idx, 0]                                           # (n, k, k)
        console.print(f"Each picture: one filter's {k}×{k} weights, drawn {zoom}× enlarged; {_key(plain)}; "
                      "full intensity at the filter's 99th-percentile |w| (the ± by each number).")
        labels = [f"#{i} ±{s:.2g}" for i, s in zip(idx, scales)]
        console.print(heatmap_grid(enlarge(maps, zoom), labels, plain, console.width, scales))
        return image_grid(diverging_rgb(maps / np.array(scales)[:, None, None]),
                          cols=int(np.ceil(np.sqrt(len(maps)))), zoom=max(4, 112 // k), gap=2)
    console.print(f"Each row: one filter's {k}×{k} weights on each of its input channels {_ranges(chans)} "
                  f"(of {C}: the maps of {source}), drawn {zoom}× enlarged" + ("" if len(chans) == C else
                  "; --channels picks others") + f"; {_key(plain)}; full intensity at the filter's "
                  "99th-percentile |w| (the ± by each number).")
    console.print(filter_rows(W[idx][:, chans], [f"#{i} ±{s:.2g}" for i, s in zip(idx, scales)],
                              [f"c{c}" for c in chans], plain, scales, zoom))
    drawn = chans if channels is not None else np.arange(C)        # the PNG has room for every channel
    tiles = (W[idx][:, drawn] / np.array(scales)[:, None, None, None]).reshape(-1, k, k)
    return image_grid(diverging_rgb(tiles), cols=len(drawn), zoom=max(2, 40 // k), gap=2)


def _safe(text) -> str:
    """User text (file names, class names) made safe to print inside rich markup: no markup,
    no control characters."""
    from rich.markup import escape

    from digitnet.termtext import terminal_safe

    return escape(terminal_safe(text))


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
    args: Optional[List[str]] = typer.Argument(None, metavar="[MODEL] [IMAGE]",
                                               help="An image file (PNG, JPEG…), preprocessed as predict does; a model "
                                                    "file before it is the older spelling of --model."),
    model: Optional[Path] = model_option(),
    index: Optional[int] = typer.Option(None, "--index", "-i", metavar="N", help="Instead of an image: row N of a data set split."),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="SPEC", help="Data set for --index [default: the model's own]."),
    split: str = typer.Option("test", "--split", metavar="test|train", help="Which split, for --index."),
    maps: str = typer.Option("0:16", "--maps", metavar="RANGE", help="Conv layers: which feature maps to draw, as a range (0:16), "
                                                    "a list (1,5,9) or ':' for all."),
    no_preprocess: bool = typer.Option(False, "--no-preprocess", help="Feed the image merely resized (as predict's "
                                                                      "--no-preprocess), not the model's preprocessing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with every layer's activations."),
):
    """One forward pass, drawn: the input, each layer's activations, the output scores.

    A dense layer's activations are one cell per neuron; a conv layer's (after its
    activation) are its feature maps, small grey pictures each on its own scale (maps larger
    than 16×16 drawn at half size, 2×2 max). Pooling, flatten and dropout sit between the
    layers drawn and are not drawn themselves."""
    from digitnet import analysis

    m, pixels, label, source = model_and_input(args, model, index, data, split, no_preprocess)
    stages = analysis.forward_stages(m, pixels)
    winner = int(stages[-1].values.argmax())
    confidence = float(m.scores(pixels.reshape(1, -1))[0, winner])     # the score predict shows
    if as_json:
        dump_json({"model": m.path, "input": source, "label": label, "predicted": winner, "name": m.class_names[winner],
                   "confidence": confidence, "sizes": [int(s.values.size) for s in stages],
                   "layers": [{"name": s.name, "shape": list(s.values.shape)} for s in stages[1:]],
                   "activations": [[round(float(v), 6) for v in s.values.reshape(-1)] for s in stages[1:]]})
        return
    # which maps to draw, checked before anything is printed
    picks = [analysis.parse_neurons(maps, s.values.shape[0], "--maps", "maps") if s.values.ndim == 3 else None
             for s in stages[1:-1]]
    _render_activations(m, pixels, label, source, stages, confidence, picks)


def model_and_input(args, model, index, data, split, no_preprocess):
    """(model, pixels (H, W) float32 in [0, 1], label or None, where they came from) for a
    command taking ``[MODEL] [IMAGE]`` or ``--index N``: an image file preprocessed as predict
    does (merely resized with ``no_preprocess``), or row N of a data set split."""
    import numpy as np

    from digitnet import analysis
    from digitnet.errors import UsageError

    model_arg, image = _model_then(args or [], "IMAGE", takes_model_alone=index is not None)
    image = Path(image) if image is not None else None
    one_of(split, SPLITS, "--split")
    m = _model(model_arg, model)
    if (image is None) == (index is None):
        raise UsageError("give an image file or --index N (not both)")
    if image is not None:
        from digitnet.predict import preprocessor
        from digitnet.preprocess import load_image

        pixels = preprocessor(m, not no_preprocess)(load_image(image))   # (H, W) float32 in [0, 1], as predict feeds it
        return m, pixels, None, str(image)
    images, labels, ds = analysis.load_split(m, data, split)
    if not 0 <= index < len(images):
        raise UsageError(f"--index {index}: the {split} split of {ds.name} has rows 0 to {len(images) - 1}")
    return m, images[index].astype(np.float32) / 255, int(labels[index]), f"{ds.name} {split}[{index}]"


def _render_activations(m, pixels, label, source, stages, confidence: float, picks) -> None:
    from rich.text import Text

    from digitnet.render import activation_cells, digit, labelled, output_bars, terminal_safe, tile

    console, plain = _console()
    out = stages[-1].values
    winner = int(out.argmax())
    names = _names(m)
    head = Text.assemble((terminal_safe(Path(m.path).name), "bold"), f" on {terminal_safe(source)}: {names[winner]} ({confidence:.1%})")
    if label is not None:
        head.append("  right" if label == winner else f"  wrong: it is {names[label]}", style="green" if label == winner else "red")
    console.print(head)
    blocks = [labelled("input" + (f" (label {names[label]})" if label is not None else ""), digit(pixels, plain))]
    hidden = list(enumerate(stages[1:-1], start=1))                # (l, stage): layer l of neurons or maps
    convs = [(l, s, idx) for (l, s), idx in zip(hidden, picks) if idx is not None]
    tokens = [(l, s) for l, s in hidden if s.values.ndim == 2]
    if convs or tokens:                                            # maps, tokens: one section per layer, under the input
        console.print(tile(blocks, console.width))
        blocks = []
        for l, s, idx in convs:
            console.print()
            _feature_maps(console, plain, l, s, idx)
        for l, s in tokens:
            console.print()
            _tokens(console, plain, l, s)
        console.print()
    for l, s in hidden:
        if s.values.ndim != 1:
            continue
        top = float(s.values.max(initial=0)) if s.activation in ("relu", None) else 1.0
        blocks.append(labelled(f"layer {l}", activation_cells(s.values, plain, rows=28, vmax=top or 1.0,
                                                              cell_width=2 if s.values.size <= 64 else 1), fit=False))
    # the bars shrink (10 down to 4 characters) so that, where possible, the output fits on the same row
    used = sum(max(line.cell_len for line in b.split("\n")) + 2 for b in blocks)
    label_w = max(len(n) if len(n) <= 6 else 6 for n in names)
    bar_w = max(4, min(10, console.width - used - label_w - 10))
    blocks.append(labelled("output", output_bars(out, names, plain, width=bar_w), fit=False))
    console.print(tile(blocks, console.width, gap=2))
    dense = [(l, s) for l, s in hidden if s.values.ndim == 1]
    if not dense:
        return
    sizes = ", ".join(f"layer {l}: {s.values.size} neurons" + ("" if m.network.mlp() else f" ({s.name})") for l, s in dense)
    order = "one character per neuron" if plain else "two neurons per character"
    acts = {s.activation or "linear" for _, s in dense}
    shade = ("each layer's brightest neuron is white" if acts <= {"relu", "linear"} else
             "white = 1, black = 0" if not acts & {"relu", "linear"} else "relu: brightest neuron white; others: white = 1")
    console.print(Text(f"{sizes}; read down each column ({order}); {', '.join(sorted(acts))}, {shade}.", style="dim"))


def _feature_maps(console, plain, l: int, stage, idx) -> None:
    """One conv layer's feature maps (C, H, W), the maps ``idx``, each on its own scale (the
    number by each is its largest value): grey from 0, or a diverging heat map when the layer
    has negative values (tanh, linear)."""
    import numpy as np

    from rich.text import Text

    from digitnet.render import heatmap_grid, shade_grid, shape_text, shrink2

    v = stage.values[idx]                                          # (n, H, W)
    c, h, w = stage.values.shape
    half = h > 16 or w > 16
    signed = bool((stage.values < 0).any())
    tops = np.abs(v).max(axis=(1, 2)) if signed else v.max(axis=(1, 2))
    key = (("' ' most negative, '=' 0, '@' most positive" if plain else "blue negative, black 0, red positive")
           + ", at the map's largest |value|") if signed else "black 0, white the map's largest value"
    console.print(Text.assemble((f"layer {l}", "bold"), f"  {stage.name}: maps {_ranges(idx)} of {c}, each {shape_text((h, w))}"
                                + (" (drawn at half size, 2×2 max)" if half else "") + f"; {key} (the number by each)"))
    shown = (shrink2(np.abs(v), peak=True) * np.sign(shrink2(v)) if signed else shrink2(v, peak=True)) if half else v
    labels = [f"#{i} {t:.2g}" for i, t in zip(idx, tops)]
    if signed:
        console.print(heatmap_grid(shown, labels, plain, console.width, [t or 1.0 for t in tops]))
    else:
        console.print(shade_grid(shown, labels, plain, console.width, tops))


def _tokens(console, plain, l: int, stage) -> None:
    """A transformer layer's tokens (T, D) as one diverging heat map: a row per token (the
    class token first, then the patches in reading order), a column per value."""
    import numpy as np

    from rich.text import Text

    from digitnet.render import heatmap, pool_max_abs, robust_scale

    T, D = stage.values.shape
    shown, k = pool_max_abs(stage.values, console.width - 2)
    scale = robust_scale(stage.values)
    key = "' ' most negative, '=' 0, '@' most positive" if plain else "blue negative, black 0, red positive"
    console.print(Text.assemble((f"layer {l}", "bold"), f"  {stage.name}: {T} tokens of {D} values; rows: the class token, "
                                f"then the patches in reading order ({'one' if plain else 'two'} per text line); columns: "
                                f"the values" + (f", each cell the strongest of {k}" if k > 1 else "")
                                + f"; {key}, full intensity at |v| = {scale:.2g}"))
    # plain text draws one character per two rows: doubling the rows gives each token its own line
    console.print(heatmap(np.repeat(shown, 2, axis=0) if plain else shown, plain, scale))


# ---------------------------------------------------------------------------------------------
# noise

def noise_command(
    model_arg: Optional[Path] = typer.Argument(None, metavar="[MODEL]", help=OLD_MODEL_HELP),
    model: Optional[Path] = model_option(),
    samples: int = typer.Option(1000, "--samples", "-n", metavar="N", help="How many noise images."),
    show: int = typer.Option(2, "--show", metavar="N", help="How many of them to draw.", min=0),
    seed: int = typer.Option(0, "--seed", metavar="N", help=SEED_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Feed pure noise and see the network answer anyway, often confidently."""
    from digitnet import analysis
    from digitnet.render import count_bars, digit_grid

    m = _model(model_arg, model)
    rep = analysis.noise_experiment(m, samples, seed, keep=show)
    if as_json:
        dump_json({"model": m.path, **rep.to_json(m.class_names)})
        return
    console, plain = _console()
    names = _names(m)
    console.print(f"[bold]{_safe(Path(m.path).name)}[/] on {samples:,} images of uniform random pixels (seed {seed}):")
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
    args: List[str] = typer.Argument(..., metavar="[MODEL] DIGIT",
                                     help="The class (output neuron) to excite, e.g. 3; a model file before it is the "
                                          "older spelling of --model."),
    model: Optional[Path] = model_option(),
    steps: int = typer.Option(200, "--steps", metavar="N", help="Gradient-ascent steps."),
    step_size: float = typer.Option(0.05, "--step-size", metavar="X", help="Largest change of any pixel per step."),
    l2: float = typer.Option(0.0, "--l2", metavar="X", help="Penalty on distance from mid-grey (0 = none; try 0.01 for quieter images)."),
    restarts: int = typer.Option(4, "--restarts", metavar="N", help="Starting images tried at once (black, grey, noise…); the best is kept."),
    seed: int = typer.Option(0, "--seed", metavar="N", help=SEED_HELP),
    png: Optional[Path] = typer.Option(None, "--png", metavar="FILE", help="Also write the image as a PNG (8× enlarged)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace the --png file if it exists (never the model itself)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """The image the network would most like to see for DIGIT, found by gradient ascent on the pixels."""
    from digitnet.errors import UsageError

    model_arg, digit_text = _model_then(args, "DIGIT")
    if digit_text is None:
        raise UsageError("name the class to dream of (DIGIT), e.g. 3")
    try:
        digit = int(digit_text)
    except ValueError:
        raise UsageError(f"DIGIT must be a class number such as 3, not {digit_text!r}") from None
    from digitnet import analysis
    from digitnet.render import digit as digit_text
    from rich.markup import escape

    from digitnet.render import grey_rgb, image_grid, labelled, output_bars, sparkline, tile

    m = _model(model_arg, model)
    if png is not None:                 # said before the gradient ascent, not after
        from digitnet.atomic import check_target

        check_target(png, force, [m.path], "--png")
    d = analysis.dream(m, digit, steps=steps, step_size=step_size, l2=l2, seed=seed, restarts=restarts)
    picture = image_grid(grey_rgb(d.image)[None], cols=1, zoom=8, gap=0)
    if png is not None:
        analysis.save_png(picture, png, force=force, inputs=[m.path])
    if as_json:
        dump_json({"model": m.path, **d.to_json(m.class_names), "png": str(png) if png else None})
        return
    console, plain = _console()
    name = _names(m)[digit]
    console.print(f"[bold]{_safe(Path(m.path).name)}[/]: the input that most excites output {escape(name)} "
                  f"({d.steps} steps of gradient ascent, pixels kept in [0, 1]" + (f", l2 {l2:g}" if l2 else "") + ")")
    console.print(tile([labelled(f"its '{name}'", digit_text(d.image, plain)),
                        labelled("output", output_bars(d.outputs, _names(m), plain, width=10), fit=False)],
                       console.width, gap=3))
    console.print(f"output {escape(name)}: {d.start_probability:.1%} → [bold]{d.probability:.1%}[/]   "
                  f"{sparkline(d.trace, width=min(40, console.width - 40), plain=plain)}")
    verdict = f"is sure this is a '{escape(name)}'" if d.probability >= 0.9 else f"only leans towards '{escape(name)}' here"
    console.print(f"[dim]The network {verdict}. Does it look like one to you?[/]")
    if png is not None:
        console.print(f"Wrote {_safe(png)} ({picture.shape[1]}×{picture.shape[0]} pixels)")


# ---------------------------------------------------------------------------------------------
# errors

def errors_command(
    model_arg: Optional[Path] = typer.Argument(None, metavar="[MODEL]", help=OLD_MODEL_HELP),
    model: Optional[Path] = model_option(),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="SPEC", help="Data set [default: the one the model was trained on]."),
    split: str = typer.Option("test", "--split", metavar="test|train", help="Which split."),
    limit: int = typer.Option(8, "--count", "-n", "--limit", metavar="N", help="How many mistakes to show."),
    small: bool = typer.Option(False, "--small", help="Draw each digit at 14×14 so more fit across."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """The digits the network gets wrong most confidently, with true and predicted labels."""
    from digitnet import analysis
    from digitnet.render import digit_grid, shrink2

    one_of(split, SPLITS, "--split")
    m = _model(model_arg, model)
    images, labels, ds = analysis.load_split(m, data, split)
    mk = analysis.confident_errors(m, images, labels, limit)
    if as_json:
        dump_json({"model": m.path, "data": data or m.dataset.get("spec") or "embedded", "split": split,
                   **mk.to_json(m.class_names)})
        return
    console, plain = _console()
    names = _names(m)
    console.print(f"[bold]{_safe(Path(m.path).name)}[/] on the {_safe(split)} split of {_safe(ds.name)}: {mk.n_wrong:,} of {mk.n:,} wrong "
                  f"({mk.n_wrong / max(mk.n, 1):.2%}); the {len(mk.index)} most confident mistakes "
                  "(true → predicted, confidence, row):")
    if len(mk.index):
        pics = shrink2(mk.images / 255.0) if small else mk.images
        labels = [f"{names[t]}→{names[p]} {c:.0%} #{i}" for i, t, p, c in zip(mk.index, mk.true, mk.predicted, mk.confidence)]
        console.print(digit_grid(pics, labels, plain, console.width))


# ---------------------------------------------------------------------------------------------

HELP = {
    "summary": ("Architecture, a table of the layers (output shape, parameters), data set, config, "
                "training history chart, accuracies.",
                "digitnet inspect summary -m models/digitnet.npz\n  digitnet inspect summary --json | jq .parameters"),
    "weights": ("The weights of one layer, blue negative, red positive: a dense layer that sees the pixels as "
                "one 28×28 heat map per neuron; other dense layers as a matrix (a row per neuron); a first "
                "conv layer as one k×k heat map per filter; a deeper conv layer as one row per filter, its "
                "k×k weights on each input channel side by side (not averaged: --channels picks which).",
                "digitnet inspect weights -m models/mnist-3b1b.npz --neurons 0:8\n"
                "  digitnet inspect weights -m models/mnist-3b1b.npz --layer 3\n"
                "  digitnet inspect weights -m lenet.npz --layer 2 --channels 0:6"),
    "activations": ("A forward pass drawn: the input (preprocessed as predict does), each layer's activations "
                    "and the output scores. Dense layers: a cell per neuron. Conv layers: their feature maps "
                    "after the activation (--maps picks which; maps over 16×16 drawn at half size, 2×2 max); "
                    "pooling layers are not drawn.",
                    "digitnet inspect activations my-digit.png -m models/digitnet.npz\n"
                    "  digitnet inspect activations --index 7"),
    "noise": ("Feed random-noise images: what the network claims to see, and how sure it is.",
              "digitnet inspect noise -m models/mnist-3b1b.npz -n 5000 --json"),
    "dream": ("Gradient ascent on the input: the image that most excites one output neuron.",
              "digitnet inspect dream 3 --png three.png"),
    "errors": ("The most confidently wrong test digits, with true and predicted labels.",
               "digitnet inspect errors -m models/digitnet.npz -n 12 --small"),
}
COMMANDS = {"summary": summary_command, "weights": weights_command, "activations": activations_command,
            "noise": noise_command, "dream": dream_command, "errors": errors_command}

from digitnet.cli import inspect_attention  # noqa: E402  (its commands use the helpers above)

HELP.update(inspect_attention.HELP)
COMMANDS.update(inspect_attention.COMMANDS)

for _name, _fn in COMMANDS.items():
    _what, _example = HELP[_name]
    app.command(_name, cls=Command, help=f"{_what}\n\n\b\nExample:\n  {_example}")(handle_errors(_fn))
