"""``digitnet inspect attention`` and ``inspect mlp``: looking inside a vision transformer
("Attention in transformers" and "How might LLMs store facts", on digits).

Each command parses, calls one function of ``digitnet.attention_analysis`` and renders with
``digitnet.render``; ``digitnet.cli.inspect`` registers them beside the other views and
lends them its input and console helpers. Nothing here imports numba.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from digitnet.cli.common import dump_json, model_option

CLS = "cls"


# ---------------------------------------------------------------------------------------------
# attention

def attention_command(
    args: Optional[List[str]] = typer.Argument(None, metavar="[MODEL] [IMAGE]",
                                               help="An image file (PNG, JPEG…), preprocessed as predict does; a model "
                                                    "file before it is the older spelling of --model."),
    model: Optional[Path] = model_option(),
    index: Optional[int] = typer.Option(None, "--index", "-i", metavar="N", help="Instead of an image: row N of a data set split."),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="SPEC", help="Data set for --index [default: the model's own]."),
    split: str = typer.Option("test", "--split", metavar="test|train", help="Which split, for --index."),
    token: str = typer.Option(CLS, "--token", "-t", metavar="cls|N",
                              help="Whose attention to draw: the class token (cls) or patch N (1 = top left, in "
                                   "reading order; also its token number in --json)."),
    patches: bool = typer.Option(False, "--patches", help="Also draw, for each block, where every patch looks (mean over heads)."),
    no_preprocess: bool = typer.Option(False, "--no-preprocess", help="Feed the image merely resized (as predict's "
                                                                      "--no-preprocess), not the model's preprocessing."),
    png: Optional[Path] = typer.Option(None, "--png", metavar="FILE",
                                       help="Also write the maps as a PNG: the input and the rollout, then a row "
                                            "per block (mean, then each head)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace the --png file if it exists (never the model itself)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: every block's and head's full attention "
                                                       "(rows: where each token looks; token 0 the class token), the "
                                                       "means over heads and the rollout."),
):
    """Where a transformer looks: for each block and head, the attention of the class token
    (or one patch) over the patches, tinted over the digit; the mean over heads; and the
    attention rollout (the blocks multiplied through, with the residual paths) to the class
    token."""
    from digitnet import attention_analysis
    from digitnet.cli.inspect import model_and_input

    m, pixels, label, source = model_and_input(args, model, index, data, split, no_preprocess)
    if png is not None:                 # said before anything is drawn, not after
        from digitnet.atomic import check_target

        check_target(png, force, [m.path], "--png")
    view = attention_analysis.attention_view(m.network, pixels)
    t = _token(token, view.rollout.shape[0] - 1)
    winner = int(view.scores.argmax())
    if png is not None:
        from digitnet import analysis

        analysis.save_png(_attention_picture(view, pixels, t), png, force=force, inputs=[m.path])
    if as_json:
        dump_json({"model": m.path, "input": source, "label": label, "predicted": winner, "name": m.class_names[winner],
                   "confidence": float(view.scores[winner]), "token": t, **view.to_json(),
                   "png": str(png) if png else None})
        return
    _render_attention(m, view, pixels, label, source, t, patches, png)


def _token(text: str, n_patches: int) -> int:
    """--token as a token number: 0 for cls, N for patch N (1..n_patches)."""
    from digitnet.errors import UsageError

    if text.strip().lower() == CLS:
        return 0
    try:
        t = int(text)
    except ValueError:
        t = -1
    if not 1 <= t <= n_patches:
        raise UsageError(f"--token must be cls or a patch from 1 to {n_patches}, got {text!r}")
    return t


def _weights(view, t: int, block: int | None, head: int | None):
    """Token t's attention spread over the pixels (H, W), scaled to its largest weight, and
    that weight: in ``block`` (None: the rollout), one ``head`` or the mean over heads."""
    from digitnet.render import enlarge

    grid = view.looks(t, block, head)
    top = float(grid.max()) or 1.0
    return enlarge(grid / top, view.patch), top


def _attention_picture(view, pixels, t: int):
    """The PNG: a row with the input and the rollout, then a row per block (the mean over
    heads, then each head); every map tinted over the digit at its own largest weight."""
    import numpy as np

    from digitnet.render import attention_rgb, grey_rgb, image_grid

    heads = max(m.shape[0] for m in view.maps)
    cols = heads + 1
    blank = np.full((*pixels.shape, 3), 128, np.uint8)              # the grid's background
    tiles = [grey_rgb(pixels), attention_rgb(pixels, _weights(view, t, None, None)[0])] + [blank] * (cols - 2)
    for b, maps in enumerate(view.maps, start=1):
        row = [attention_rgb(pixels, _weights(view, t, b, h)[0]) for h in [None, *range(maps.shape[0])]]
        tiles += row + [blank] * (cols - len(row))
    return image_grid(np.array(tiles), cols=cols, zoom=4, gap=4)


def _render_attention(m, view, pixels, label, source, t: int, patches: bool, png) -> None:
    from rich.text import Text

    from digitnet.cli.inspect import _console, _names, _safe
    from digitnet.render import INK, digit, labelled, shrink2, tile, tinted

    console, plain = _console()
    names = _names(m)
    winner = int(view.scores.argmax())
    head = f"[bold]{_safe(Path(m.path).name)}[/] on {_safe(source)}: {names[winner]} ({view.scores[winner]:.1%})"
    if label is not None:
        head += "  [green]right[/]" if label == winner else f"  [red]wrong: it is {_safe(names[label])}[/]"
    console.print(head)
    rows, cols = view.grid
    who = "the class token" if t == 0 else f"patch {t} (row {(t - 1) // cols}, column {(t - 1) % cols})"
    key = (f"' .:-=+*#%@' none … most attention, '{INK}' the digit's strokes" if plain
           else "black none … red most attention, the digit's strokes lightened over it")
    console.print(f"Where {who} looks: {rows}×{cols} patches of {view.patch}×{view.patch} pixels, {key}; each map at its "
                  "own largest weight (the number by it).")
    weights, top = _weights(view, t, None, None)
    console.print(tile([labelled("input" + (f" (label {names[label]})" if label is not None else ""), digit(pixels, plain)),
                        labelled(f"rollout {top:.2f}", tinted(pixels, weights, plain), fit=False)], console.width, gap=3))
    heads = max(mp.shape[0] for mp in view.maps)
    whole = (heads + 1) * (pixels.shape[1] + 1) <= console.width    # a block's maps on one row at full size
    if not whole:
        console.print(Text(f"Blocks: drawn at half size (2×2 averages) so that the mean and {heads} heads fit a row; "
                           f"a terminal {(heads + 1) * (pixels.shape[1] + 1)} columns wide draws them whole.", style="dim"))
    for b, maps in enumerate(view.maps, start=1):
        pictures = []
        for h in [None, *range(maps.shape[0])]:
            w, top = _weights(view, t, b, h)
            img = pixels if whole else shrink2(pixels)
            pictures.append(labelled(f"{'mean' if h is None else f'head {h}'} {top:.2f}",
                                     tinted(img, w if whole else shrink2(w), plain), fit=False))
        console.print()
        console.print(Text(f"block {b}", style="bold"))
        console.print(tile(pictures, console.width, gap=1))
    if patches:
        _every_patch(console, plain, view)
    if png is not None:
        console.print(f"Wrote {_safe(png)}: the input and the rollout, then a row per block (mean, then heads "
                      f"0–{heads - 1}).")


def _every_patch(console, plain: bool, view) -> None:
    """For each block: a small map per patch, laid out as the patches are, of where that
    patch looks (mean over heads), each at its own largest weight."""
    import numpy as np

    from rich.text import Text

    from digitnet.render import enlarge, tile, tinted

    rows, cols = view.grid
    zoom = max(1, 8 // max(rows, cols))
    for b in range(1, len(view.maps) + 1):
        console.print()
        console.print(Text.assemble((f"block {b}, every patch", "bold"),
                                    " (mean over heads): the small map in row r, column c is where that patch looks"))
        for r in range(rows):
            maps = []
            for c in range(cols):
                g = view.looks(r * cols + c + 1, b)
                w = enlarge(g / (g.max() or 1.0), zoom)
                maps.append(tinted(np.zeros_like(w), w, plain))
            console.print(tile(maps, console.width, gap=1))
            if r < rows - 1 and plain:      # in plain text the rows of maps would run together
                console.print()


# ---------------------------------------------------------------------------------------------
# mlp

def mlp_command(
    model_arg: Optional[Path] = typer.Argument(None, metavar="[MODEL]", help="The model (as --model)."),
    model: Optional[Path] = model_option(),
    block: int = typer.Option(..., "--block", metavar="B", help="Which transformer block's MLP (1 = the first)."),
    neuron: Optional[str] = typer.Option(None, "--neuron", metavar="N|RANGE",
                                         help="Which neurons: one (7), a range (0:16), a list (1,5,9) or ':' for all "
                                              "[default: all; with --ablate, that one]."),
    ablate: Optional[int] = typer.Option(None, "--ablate", metavar="N",
                                         help="Zero neuron N and show each class's test accuracy before and after."),
    top: int = typer.Option(5, "--top", "-k", metavar="K", help="How many test patches to show as each neuron's question."),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="SPEC", help="Data set whose test split asks the "
                                                                                 "questions [default: the model's own]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """What one block's MLP neurons do ("How might LLMs store facts", on digits): each
    neuron's question, the test-set patches that excite it most, and its answer, the classes
    its output direction promotes when pushed through the final LayerNorm and the head."""
    from digitnet import attention_analysis
    from digitnet.cli.inspect import _model

    m = _model(model_arg, model)
    rep = attention_analysis.mlp_report(m, block, neuron, top, ablate, data)
    if as_json:
        dump_json({"model": m.path, **rep.to_json(m.class_names)})
        return
    _render_mlp(m, rep)


def _render_mlp(m, rep) -> None:
    import numpy as np

    from rich.text import Text

    from digitnet.cli.inspect import _console, _names, _ranges, _safe
    from digitnet.render import digit, enlarge, heatmap, labelled, tile

    console, plain = _console()
    names = _names(m)
    q = rep.questions
    zoom = max(1, 8 // q.patch)
    console.print(f"[bold]{_safe(Path(m.path).name)}[/], block {rep.block}'s MLP: neuron{'s' if len(rep.neurons) > 1 else ''} {_ranges(rep.neurons)} of "
                  f"{rep.n_neurons}, on the {len(rep.images):,} test images of {_safe(rep.data)}")
    scale = float(np.abs(rep.answers).max()) or 1.0
    key = "' ' most negative, '=' 0, '@' most positive" if plain else "blue lowers, red raises"
    console.print(Text(f"question: the {q.value.shape[1]} test patches ({q.patch}×{q.patch} pixels) that excite the neuron "
                       "most, with its activation and the patch's (row, column); answer: how much a unit of the "
                       "neuron raises or lowers each class's score, through the final LayerNorm and the head "
                       f"({key}, full at ±{scale:.2g}).", style="dim"))
    label_w = len(f"#{rep.n_neurons - 1}") + 1
    header = "".join(n[:1].ljust(2) for n in names)
    for j in rep.neurons:
        # each patch in a dim frame (two pixel rows: one text line), so a dark patch still shows its edges
        crops = np.pad(enlarge(q.patches(rep.images, j) / 255.0, zoom), ((0, 0), (2, 2), (1, 1)), constant_values=0.3)
        pictures = [Text(f"#{j}".ljust(label_w), style="bold")]
        where = [divmod(int(t) - 1, q.grid[1]) for t in q.token[j]]
        pictures += [labelled(f"{v:.1f} ({r},{c})", digit(crop, plain), style="", fit=False)
                     for crop, v, (r, c) in zip(crops, q.value[j], where)]
        ans = rep.answers[j]
        order = np.argsort(-ans, kind="stable")
        strip = heatmap(np.repeat(np.repeat(ans[None], 2, axis=0), 2, axis=1), plain, scale)
        answer = Text(header.rstrip() + "\n")
        answer.append_text(strip)
        answer.append(f"\n+{names[order[0]]} {ans[order[0]]:+.2f}  -{names[order[-1]]} {ans[order[-1]]:+.2f}")
        pictures.append(labelled("answer", answer, fit=False))
        console.print(tile(pictures, console.width, gap=1))
    if rep.ablation is not None:
        _render_ablation(console, plain, names, rep)


def _render_ablation(console, plain: bool, names, rep) -> None:
    from rich.box import SIMPLE
    from rich.table import Table
    from rich.text import Text

    from digitnet.render import SIMPLE_ASCII, fits_the_width

    ab = rep.ablation
    console.print()
    console.print(Text.assemble((f"neuron {ab.neuron} of block {ab.block} zeroed", "bold"),
                                f": test accuracy {ab.accuracy_before:.2%} -> {ab.accuracy_after:.2%} "
                                f"({100 * (ab.accuracy_after - ab.accuracy_before):+.2f} points)"))
    table = Table(box=SIMPLE_ASCII if plain else SIMPLE, show_edge=False, padding=(0, 1), pad_edge=False)
    for col in ("class", "images", "before", "after", "change"):
        table.add_column(col, justify="right", no_wrap=True)
    for i, (n, b, a) in enumerate(zip(rep.support, ab.before, ab.after)):
        change = 100 * (a - b)
        style = "" if plain or abs(change) < 0.005 else ("red" if change < 0 else "green")
        table.add_row(Text(names[i]), f"{int(n):,}", f"{b:.2%}", f"{a:.2%}", Text(f"{change:+.2f}", style=style))
    console.print(fits_the_width(table))
    console.print(Text("change: in percentage points of that class's accuracy.", style="dim"))


HELP = {
    "attention": ("Where a transformer looks, for one image: for each block and head the class token's (or, with "
                  "--token, one patch's) attention over the patches, tinted over the digit; the mean over heads; "
                  "the attention rollout to the class token. Transformers only (train --preset attention).",
                  "digitnet inspect attention models/attention.npz my-digit.png --png att.png\n"
                  "  digitnet inspect attention -m models/attention.npz -i 7 --token 6 --json"),
    "mlp": ("What a transformer block's MLP neurons do: each neuron's question (the test patches that excite it "
            "most) and answer (the classes its output promotes through the final LayerNorm and head); --ablate N "
            "zeroes neuron N and shows each class's accuracy change.",
            "digitnet inspect mlp models/attention.npz --block 4 --neuron 0:8\n"
            "  digitnet inspect mlp models/attention.npz --block 2 --ablate 17 --json"),
}
COMMANDS = {"attention": attention_command, "mlp": mlp_command}
