"""Photos of paper: the sheet, uneven light, ruled and squared lines, stray marks and a desk around
it must not reach the network; a clean image still takes MNIST's own steps.

Scenes are built with scripts/make_photos.py's parts at fixed settings. The expected 28×28 is
independent of the photo path: the same pen strokes drawn black on white, through the plain
MNIST steps (a clean image never enters the photo path, which a test below checks)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digit_images import make_image
from digitnet import photo
from digitnet.errors import DataError
from digitnet.preprocess import load_image, to_mnist

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_photos", ROOT / "scripts" / "make_photos.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_photos", mod)
    spec.loader.exec_module(mod)
    return mod


mp = _script()
INK = np.array([0.08, 0.08, 0.14], np.float32)


def strokes(strokes_, size=200, width=16, seed=0) -> Image.Image:
    """Pen strokes (unit-box points) as a white-on-black mask, no jitter."""
    return mp._draw_strokes(strokes_, size, np.random.default_rng(seed), width, 0.7, jitter=0.0)


FIVE = [[(0.22, 0.14), (0.15, 0.45), (0.5, 0.36), (0.85, 0.55), (0.85, 0.85), (0.5, 1.0), (0.1, 0.9)],
        [(0.35, 0.0), (0.9, 0.0)]]                                  # the top bar drawn apart, not touching
SEVEN = [[(0.08, 0.02), (0.92, 0.0), (0.4, 1.0)]]
FOUR = [[(0.62, 0.0), (0.06, 0.68), (0.95, 0.68)], [(0.68, 0.3), (0.68, 1.0)]]
THREE = mp.HANDS["3"][0]


def gray_of(rgb: np.ndarray) -> np.ndarray:
    """What load_image makes of an RGB photo: Pillow's luma, 0-1."""
    return np.asarray(Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).convert("L"), np.float32) / 255


def clean(glyph: Image.Image) -> np.ndarray:
    """The glyph drawn black on white, through the plain steps: the expected 28×28."""
    m = np.asarray(glyph, np.float32) / 255
    return to_mnist(np.pad(1 - m, 40, constant_values=1))


PENCIL = np.array([0.4, 0.4, 0.4], np.float32)


def photo_of(glyphs, paper="plain", shadow=0.0, desk="wood", note=False, gradient=0.0, noise=0.01, seed=1,
             size=(640, 480), rel=0.8, ink=INK) -> np.ndarray:
    """A photo (greyscale) of glyphs written on a sheet lying straight on a desk: a list of
    (mask, dx) with dx the horizontal offset of each glyph's centre in sheet pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    frame = np.ones((h, w, 3), np.float32) * {"wood": [0.45, 0.3, 0.15], "dark": [0.12, 0.12, 0.12],
                                              "grey": [0.5, 0.5, 0.52]}[desk]
    frame *= 1 + 0.06 * mp._low_freq(rng, h, w)[..., None]
    side = int(rel * min(w, h))
    surface, _ = mp.sheet(rng, side, side, "note" if note else "plain" if paper == "dark ruled" else paper)
    if paper == "dark ruled":                           # grey lines as dark as a light pencil
        for y in range(side // 20, side, side // 20):
            surface[y:y + 2] = 0.55
    for glyph, dx in glyphs:
        mp.write_on(surface, glyph, rng, int(0.5 * side), (side / 2 + dx, side / 2), 0.0, ink, 1.0)
    x0, y0 = (w - side) / 2, (h - side) / 2
    quad = np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]])
    mp.place(frame, surface, quad, shadow=0.3)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    light = 1 - gradient * xx / w
    if shadow:                                          # a soft-edged shadow over the left half, across the digit
        light = light * (1 - shadow / (1 + np.exp(np.clip((xx - 0.5 * w - 0.1 * (yy - h / 2)) / 6, -50, 50))))
    frame *= light[..., None]
    frame += rng.normal(0, noise, frame.shape).astype(np.float32)
    return gray_of(frame)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("what", [
    dict(),                                              # a sheet on a wooden desk
    dict(desk="dark"),                                   # on a black desk: the edge of the frame is dark
    dict(shadow=0.55),                                   # a shadow across the digit
    dict(gradient=0.5, desk="grey"),                     # light falling off across the frame
    dict(paper="ruled"),
    dict(paper="ruled", ink=PENCIL),
    dict(paper="dark ruled", ink=PENCIL),                # lines about as dark as the pencil
    dict(paper="squared", shadow=0.4),
    dict(paper="squared", ink=PENCIL),
    dict(note=True, desk="grey"),                        # a sticky note
])
def test_a_photo_comes_out_as_the_clean_digit(what):
    """Correlation with the clean 28×28 above 0.85: the same 3 moved by one pixel gives 0.71,
    another digit 0.17-0.40; the old preprocessing gives 0.0-0.53 on all but the note (0.998)."""
    glyph = strokes(THREE)
    x = to_mnist(photo_of([(glyph, 0)], **what))
    assert corr(x, clean(glyph)) > 0.85


def test_ruled_lines_are_found_and_taken_out_but_not_a_long_stroke():
    glyph = strokes(THREE)
    found = photo.find_ink(photo_of([(glyph, 0)], paper="dark ruled", ink=PENCIL))
    assert found.lines.sum() > 1000 and not found.clean
    # the lines' pixels are out of the ink; the digit's are in
    assert not (found.ink[found.lines] > 0).any()
    one = strokes([[(0.5, 0.0), (0.5, 1.0)]], width=6)  # a tall thin 1 on plain paper: a stroke, not a line
    found = photo.find_ink(photo_of([(one, 0)], rel=0.95, desk="grey"))
    assert not found.lines.any()


def test_a_separate_part_of_the_digit_is_kept():
    glyph = strokes(FIVE)
    notes = {}
    x = to_mnist(photo_of([(glyph, 0)]), notes=notes)
    assert notes["parts"] == 2 and notes["other_marks"] == 0
    assert corr(x, clean(glyph)) > 0.9


def test_a_second_digit_beside_it_is_left_out_and_noted():
    four, seven = strokes(FOUR), strokes(SEVEN, seed=1)
    notes = {}
    x = to_mnist(photo_of([(four, -80), (seven, 80)], rel=0.95), notes=notes)
    assert notes["other_marks"] == 1
    assert max(corr(x, clean(four)), corr(x, clean(seven))) > 0.85


def test_a_marker_stroke_wider_than_the_background_window_is_not_hollow():
    """A bar 90 px wide on paper lit unevenly (480×640): wider than the default closing window
    (CLOSING of 480 = 57 px), so the window must grow with the strokes, or the bar's middle
    would be taken for paper."""
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    gray = 0.9 - 0.3 * xx / 640                          # light falling off to the right
    gray[80:400, 275:365] *= 0.15                        # the bar
    assert 90 > photo.CLOSING * 480
    found = photo.find_ink(gray)
    assert not found.clean
    middle = found.ink[100:380, 310:330]
    assert middle.min() > 0.8                            # ink right through, not a hollow outline
    assert found.ink[:, :200].max() == 0 and found.ink[:, 450:].max() == 0


@pytest.mark.parametrize("what", [dict(paper="plain"), dict(paper="ruled"), dict(paper="squared"),
                                  dict(note=True, desk="dark")])
def test_blank_paper_is_no_digit(what):
    with pytest.raises(DataError, match="no digit found"):
        to_mnist(photo_of([], **what))


def test_blank_paper_in_a_shadow_is_at_least_doubted(tmp_path):
    """A shadow's straight edge across blank ruled paper hides the sheet; what is found then
    (the sheet's own shadow around it) is no digit to the doubt rules."""
    from digitnet.modelfile import default_model_path, load_model
    from digitnet.predict import predict_inputs

    path = tmp_path / "blank.png"
    Image.fromarray((photo_of([], paper="ruled", shadow=0.5) * 255).astype(np.uint8)).save(path)
    row = next(predict_inputs(load_model(default_model_path()), [str(path)]))
    assert row.error is not None or row.warning is not None


def test_clean_images_take_the_plain_path():
    """Every person-made clean image is reported clean by the photo analysis, so to_mnist
    gives them exactly what it always gave."""
    rng = np.random.default_rng(3)
    for i in range(30):
        img, _ = make_image(i % 10, rng)
        if img.mode == "LA":
            white = Image.new("RGBA", img.size, "white")
            white.alpha_composite(img.convert("RGBA"))
            img = white
        gray = np.asarray(img.convert("L"), np.float32) / 255
        assert photo.find_ink(gray).clean, i
    assert not photo.find_ink(photo_of([(strokes(THREE), 0)])).clean


def test_the_shared_samples_take_the_plain_path(samples):
    """Every shared sample (real digits no test here drew) is reported clean too."""
    shared = sorted(samples.glob("*.[pj][np]g"))
    assert len(shared) == 30
    for path in shared:
        assert photo.find_ink(load_image(path)).clean, path.name


def test_a_bold_light_digit_on_black_is_not_a_sheet(samples):
    """A white 6 on black is bright, large and nearly convex: the straight-edge test tells it
    from a sheet of paper, so its polarity stays light ink on dark."""
    gray = load_image(samples / "6_020.jpg")
    assert photo.find_sheet(photo.work_copy(gray)) is None
    sheet = photo_of([(strokes(THREE), 0)], desk="dark")
    found = photo.find_sheet(photo.work_copy(sheet))
    assert found is not None and 0.4 < found.mean() < 0.7


def test_photos_of_the_generator_are_read(monkeypatch, tmp_path):
    """End to end on the generator's own photos (small sizes to stay quick): the shipped
    model reads at least 18 of 20."""
    from digitnet.modelfile import default_model_path, load_model

    monkeypatch.setattr(mp, "SIZES", [(640, 480), (800, 600)])
    monkeypatch.setattr(mp, "SIZE_WEIGHTS", [0.5, 0.5])
    model = load_model(default_model_path())
    from digit_images import font_files
    from digitnet.datasets import load_dataset

    fonts = font_files()
    test = load_dataset("embedded")
    rng = np.random.default_rng(11)
    right = 0
    for i in range(20):
        label = i % 10
        path = tmp_path / f"p{i}"
        row = mp.photo(rng, mp.digit_content(label, fonts, (test.test_images, test.test_labels)), path,
                       mp.PAPERS[i % 4])
        x = to_mnist(load_image(path.with_name(row["file"])))
        right += int(model.scores(x[None])[0].argmax()) == label
    assert right >= 18


def test_large_pngs_are_reduced_before_float_and_jpegs_drafted(tmp_path):
    big = np.full((3000, 4000), 255, np.uint8)
    big[1000:2000, 1800:2200] = 0                        # a dark bar in the middle
    Image.fromarray(big).save(tmp_path / "big.png")
    gray = load_image(tmp_path / "big.png")
    assert gray.shape == (1500, 2000)
    assert gray[700, 1000] == pytest.approx(0) and gray[0, 0] == pytest.approx(1)
    small = np.full((600, 800), 255, np.uint8)
    Image.fromarray(small).save(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png").shape == (600, 800)   # small images are left alone


def test_work_copy_and_timing_budget_of_a_12mp_photo(tmp_path):
    """A 12-megapixel JPEG is decoded at 1/4 scale and analysed at WORK_SIDE: the arrays stay
    small whatever the photo's size."""
    rgb = np.full((3000, 4000, 3), 230, np.uint8)
    rgb[1000:2000, 1900:2100] = 20
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=80)
    gray = load_image(tmp_path / "big.jpg")
    assert max(gray.shape) <= 1024
    assert max(photo.work_copy(gray).shape) <= photo.WORK_SIDE
    steps = {}
    to_mnist(gray, steps=steps)
    assert math.prod(steps["ink"].shape) <= 1024 ** 2


def test_a_drawing_skips_the_photo_analysis(monkeypatch):
    """The drawing page's images (one exact background level) take the plain path without
    the photo analysis (a few ms instead of ~100), and still get their notes."""
    from PIL import ImageDraw

    def no(*a, **k):
        raise AssertionError("the photo analysis ran on a drawing")

    monkeypatch.setattr(photo, "closing", no)
    monkeypatch.setattr(photo, "find_sheet", no)
    monkeypatch.setattr(photo, "find_lines", no)
    im = Image.new("L", (280, 280), 0)
    draw = ImageDraw.Draw(im)
    draw.ellipse((30, 60, 120, 220), outline=255, width=18)               # a 0 …
    draw.ellipse((150, 60, 240, 220), outline=255, width=18)              # … and another: "00"
    found = photo.find_ink(np.asarray(im, np.float32) / 255)
    assert found.clean and found.notes["other_marks"] == 1 and found.notes["dark_paper"]


def test_step_panels_of_a_photo_show_the_sheet_the_ink_and_the_digit_kept(tmp_path):
    """--show's panels for a photo with a second mark beside the digit: the titles in order, each
    panel small, the 28×28 the one to_mnist gives; "paper removed" has both marks, "kept" the
    digit bright and the other mark dim (dropped), and never the desk."""
    from digitnet.preprocess import step_panels

    four, seven = strokes(FOUR), strokes(SEVEN, seed=1)
    gray = photo_of([(four, -80), (seven, 80)], rel=0.95)
    panels = step_panels(gray, height=24)
    assert [t for t, _ in panels] == ["image", "paper removed", "kept", "network saw"]
    for title, a in panels[:-1]:
        assert a.shape[0] <= 24 and a.shape[1] <= 48 and 0 <= a.min() and a.max() <= 1, title
    assert np.array_equal(panels[-1][1], to_mnist(gray))
    removed, kept = panels[1][1], panels[2][1]
    h, w = kept.shape
    left, right = kept[:, : w // 2], kept[:, w // 2:]   # the 4 (kept, the larger) and the 7 (dropped)
    assert left.max() > 0.9 and 0.2 < right.max() < 0.6
    assert removed[:, : w // 2].max() > 0.5 and removed[:, w // 2:].max() > 0.5
    assert kept[:, :2].max() < 0.6                       # the desk at the frame's edge: dropped, if found at all
    # the same panels from the file, as predict reads it
    path = tmp_path / "photo.png"
    Image.fromarray((gray * 255).round().astype(np.uint8)).save(path)
    from_file = step_panels(load_image(path), height=24)
    assert [t for t, _ in from_file] == [t for t, _ in panels]
    assert np.array_equal(from_file[-1][1], to_mnist(load_image(path)))


def test_the_image_panel_outlines_the_sheet_found():
    """At full size (a panel as tall as the work copy) the image panel is the photo with a black
    band along the inside of the sheet's edge (about its perimeter long), nothing else changed;
    at --show's size the outline is still there, a ring of black pixels."""
    from digitnet.preprocess import step_panels

    gray = photo_of([(strokes(THREE), 0)])                # 640×480: the work copy is the image itself
    sheet = photo.find_ink(gray).sheet
    assert sheet is not None
    side = np.sqrt(sheet.sum())
    image = step_panels(gray, height=480)[0][1]
    band = image != gray
    assert (image[band] == 0).all() and not band[~sheet].any()
    assert 3 * side < band.sum() < 8 * side               # one or two pixels wide, all round
    off = np.pad(~sheet, 2, constant_values=True)         # every band pixel has paper's edge within 2 px
    near = np.zeros_like(sheet)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near |= off[2 + dy:2 + dy + sheet.shape[0], 2 + dx:2 + dx + sheet.shape[1]]
    assert near[band].all()
    small = step_panels(gray, height=24)[0][1]
    assert (small == 0).sum() >= 4 * 0.8 * 24 * 0.7      # most of the sheet's outline (0.8 of the frame's height)


def test_step_panels_without_preprocessing_show_the_image_and_the_plain_resize():
    from digitnet.preprocess import resize_plain, step_panels

    gray = photo_of([(strokes(THREE), 0)])
    panels = step_panels(gray, preprocessing="none")
    assert [t for t, _ in panels] == ["image", "network saw"]
    assert np.array_equal(panels[-1][1], resize_plain(gray))
    with pytest.raises(DataError, match="unknown preprocessing 'sharpen'"):
        step_panels(gray, preprocessing="sharpen")
