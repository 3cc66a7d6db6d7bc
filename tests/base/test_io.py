"""Palette PNGs and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from base.errors import DatasetError
from base.io import atomic_path, davis_palette, read_index_png, write_index_png


def test_davis_palette_colours():
    pal = davis_palette()
    assert pal.shape == (256, 3)
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0] and pal[2].tolist() == [0, 128, 0] and pal[3].tolist() == [128, 128, 0]
    assert pal[4].tolist() == [0, 0, 128]


def test_palette_png_round_trip(tmp_path):
    ids = np.arange(12 * 7, dtype=np.uint8).reshape(12, 7) % 5
    path = tmp_path / "a/b/00000.png"
    write_index_png(path, ids)
    img = Image.open(path)
    assert img.mode == "P"
    assert img.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    assert np.array_equal(read_index_png(path), ids)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, not mkstemp's 0600


def test_bundled_annotation_uses_the_same_palette():
    from pathlib import Path

    png = Path(__file__).resolve().parents[2] / "data/samples/davis2016-sample/Annotations/480p/blackswan/00000.png"
    assert Image.open(png).getpalette()[:12] == davis_palette()[:4].flatten().tolist()


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_read_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        read_index_png(tmp_path / "x.png")
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="corrupt"):
        read_index_png(tmp_path / "x.png")


def _pil_rgb(path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"), dtype=np.uint8)


def test_jpeg_frames_decode_as_pil_does():
    """OpenCV's JPEG decoding (the fast path) gives PIL's pixels on the bundled frames."""
    from pathlib import Path

    from base.io import read_image_rgb

    root = Path(__file__).resolve().parents[2] / "data/samples/davis2016-sample/JPEGImages/480p"
    files = sorted(root.glob("*/*.jpg"))[::9]
    assert len(files) >= 10
    for path in files:
        assert np.array_equal(read_image_rgb(path), _pil_rgb(path)), path


def test_jpeg_other_modes_and_broken_files(tmp_path):
    from base.io import read_image_rgb

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "c.jpg", quality=90)
    Image.fromarray(colour[..., 0]).save(tmp_path / "g.jpg")  # grey JPEG: PIL's path, replicated to 3 channels
    Image.fromarray(colour).convert("CMYK").save(tmp_path / "k.jpg")  # CMYK: PIL's conversion
    Image.fromarray(colour).save(tmp_path / "p.jpg", format="PNG")  # a PNG named .jpg
    for name in ("c", "g", "k", "p"):
        out = read_image_rgb(tmp_path / f"{name}.jpg")
        assert out.shape == (37, 53, 3) and out.dtype == np.uint8
        assert np.array_equal(out, _pil_rgb(tmp_path / f"{name}.jpg")), name
    data = (tmp_path / "c.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # cut short: refused, not filled in
    with pytest.raises(DatasetError, match="corrupt"):
        read_image_rgb(tmp_path / "cut.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8garbage\xff\xd9")
    with pytest.raises(DatasetError, match="corrupt"):
        read_image_rgb(tmp_path / "junk.jpg")
    with pytest.raises(DatasetError, match="file not found"):
        read_image_rgb(tmp_path / "none.jpg")
