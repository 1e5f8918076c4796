"""Decoding real files (EXIF, alpha, 16-bit, palette, corrupt) and the training dataset."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import real_photo
from LoadData import (ColorizationDataset, ImageReadError, collate_skip, find_images, load_rgb, make_loader,
                      normalize_lab, resize_to_square, rgb_to_lab, to_tensor)


def test_exif_orientation_is_applied(tmp_path):
    rgb = real_photo("rocket")  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_rgb(tmp_path / "r.jpg")
    assert out.shape == (rgb.shape[1], rgb.shape[0], 3)
    expected = np.rot90(rgb, k=-1).astype(np.float32) / 255.0
    assert np.abs(out - expected).mean() < 0.03  # JPEG noise only


def test_alpha_is_composited_onto_white(tmp_path):
    rgba = np.dstack([real_photo("chelsea"), np.full(real_photo("chelsea").shape[:2], 255, np.uint8)])
    rgba[:, : rgba.shape[1] // 2, 3] = 0  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert np.all(out[:, : rgba.shape[1] // 2] == 1.0)
    assert np.allclose(out[:, -1], rgba[:, -1, :3] / 255.0)


def test_16bit_grey_keeps_precision(tmp_path):
    grey = (np.linspace(0, 65535, 200 * 50).reshape(50, 200)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    out = load_rgb(tmp_path / "g16.png")
    assert out.shape == (50, 200, 3) and out.dtype == np.float32
    assert np.allclose(out[..., 0], grey / 65535.0, atol=1e-6)
    assert len(np.unique(out[..., 0])) > 256  # more levels than 8-bit could hold


def test_palette_image(tmp_path):
    pal = Image.fromarray(real_photo("coffee")).convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.save(tmp_path / "p.png")
    out = load_rgb(tmp_path / "p.png")
    assert np.allclose(out, np.asarray(pal.convert("RGB")) / 255.0)


def test_corrupt_file_raises_naming_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_rgb(bad)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(real_photo("coffee")).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:2000])
    with pytest.raises(ImageReadError, match="truncated.png"):
        load_rgb(truncated)


def test_find_images_is_recursive_and_filters(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for p in ("a.JPG", "sub/b.png", "sub/deeper/c.webp", "notes.txt", "sub/d.tif"):
        (tmp_path / p).write_bytes(b"x")
    names = [p.name for p in find_images(tmp_path)]
    assert names == ["a.JPG", "b.png", "d.tif", "c.webp"]  # sorted by path; .txt ignored
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        find_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        find_images(tmp_path / "missing")


@pytest.mark.parametrize("train", [True, False])
def test_dataset_items_are_lab_in_range(photo_dir, train):
    ds = ColorizationDataset(find_images(photo_dir), image_size=48, train=train)
    item = ds[0]
    assert item["L"].shape == (1, 48, 48) and item["ab"].shape == (2, 48, 48)
    assert item["L"].min() >= -1 and item["L"].max() <= 1 and item["ab"].abs().max() <= 1
    assert item["ab"].abs().mean() > 0.01  # a colour photo has colour


def test_validation_items_are_the_whole_image_resized_whatever_the_epoch_or_seed(photo_dir):
    """No random crop or flip in validation: an item is the whole photo resized, the same in every epoch, for
    every seed (the training items, drawn per (seed, epoch, index), do change)."""
    files = find_images(photo_dir)
    val = ColorizationDataset(files, image_size=48, train=False)
    train = ColorizationDataset(files, image_size=48, train=True)
    for i in (1, 4):
        L, ab = normalize_lab(rgb_to_lab(resize_to_square(to_tensor(load_rgb(files[i])), 48)))
        items = []
        for epoch, seed in ((0, 0), (3, 0), (3, 7)):
            val.epoch, val.seed = epoch, seed
            items.append(val[i])
        assert all(torch.equal(it["L"], L) and torch.equal(it["ab"], ab) for it in items)
        train.epoch = 0
        first = train[i]["ab"]
        train.epoch = 3
        assert not torch.equal(first, train[i]["ab"])  # the comparison can tell a random crop apart


def test_unreadable_file_is_skipped_with_warning_and_counted(photo_dir, tmp_path):
    bad = tmp_path / "zz_corrupt.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    ds = ColorizationDataset(find_images(photo_dir) + [bad], image_size=32, train=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(make_loader(ds, batch_size=4, shuffle=False, workers=0))
    assert any("zz_corrupt.jpg" in str(w.message) for w in caught)
    assert sum(b["skipped"] for b in batches) == 1
    assert sum(len(b["L"]) for b in batches if "L" in b) == len(ds) - 1
    assert collate_skip([None])["skipped"] == 1
