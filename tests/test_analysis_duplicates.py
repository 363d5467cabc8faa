"""Near-duplicate stacks from perceptual hashes, and choosing the best image of each stack."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFilter

from charstudio.analysis.duplicates import (
    DEFAULT_MAX_DISTANCE,
    best_of_stack,
    duplicate_stacks,
    hamming_distance,
    perceptual_hash,
    rejects_from_stacks,
)

pytest.importorskip("imagehash")
skimage_data = pytest.importorskip("skimage.data")


def rgb(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage_data, name)()).convert("RGB")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer)


def test_hash_format_and_distance() -> None:
    value = perceptual_hash(rgb("astronaut"))
    assert len(value) == 16 and int(value, 16) >= 0 and value == value.lower()
    assert hamming_distance(value, value) == 0
    assert hamming_distance("0000000000000000", "ffffffffffffffff") == 64
    assert hamming_distance("0000000000000000", "0000000000000103") == 3


def test_variations_stack_and_different_pictures_do_not() -> None:
    astronaut = rgb("astronaut")
    coffee = rgb("coffee")
    images = {
        "astronaut": astronaut,
        "astronaut-q70": jpeg(astronaut, 70),
        "astronaut-thumb": astronaut.resize((200, 200), Image.Resampling.BILINEAR),
        "astronaut-soft": astronaut.filter(ImageFilter.GaussianBlur(1.5)),
        "coffee": coffee,
        "coffee-q70": jpeg(coffee, 70),
        "coffee-half": coffee.resize((300, 200), Image.Resampling.BILINEAR),
        "camera": rgb("camera"),
        "rocket": rgb("rocket"),
        "chelsea": rgb("chelsea"),
        "astronaut-mirrored": astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    }
    hashes = {key: perceptual_hash(image) for key, image in images.items()}
    stacks = duplicate_stacks(hashes)
    assert stacks == [
        ["astronaut", "astronaut-q70", "astronaut-thumb", "astronaut-soft"],
        ["coffee", "coffee-q70", "coffee-half"],
    ]
    # The margins behind the default: variations stay well inside, other pictures far outside.
    for key in ("astronaut-q70", "astronaut-thumb", "astronaut-soft"):
        assert hamming_distance(hashes["astronaut"], hashes[key]) <= DEFAULT_MAX_DISTANCE // 2
    for key in ("coffee", "camera", "rocket", "chelsea", "astronaut-mirrored"):
        assert hamming_distance(hashes["astronaut"], hashes[key]) > 3 * DEFAULT_MAX_DISTANCE


def test_stacks_are_connected_components() -> None:
    # a-b and b-c are within 6 bits, a-c is not: one stack through b. d stands alone.
    hashes = {
        "a": "0000000000000000",
        "b": "000000000000003f",  # 6 bits from a
        "c": "0000000000000fff",  # 6 bits from b, 12 from a
        "d": "ffffffff00000000",
        "e": None,
    }
    assert duplicate_stacks(hashes) == [["a", "b", "c"]]
    assert duplicate_stacks(hashes, max_distance=5) == []
    assert duplicate_stacks({"a": "0000000000000000"}) == []


def test_many_hashes_are_compared_in_blocks() -> None:
    # More ids than one comparison block holds; pairs straddle the block boundary.
    hashes = {i: f"{(i // 2) * 0x1F3D5B79A2C4E687 % 2**64:016x}" for i in range(2500)}
    stacks = duplicate_stacks(hashes, max_distance=0)
    assert len(stacks) == 1250
    assert all(stack == [2 * k, 2 * k + 1] for k, stack in enumerate(sorted(stacks)))


def test_best_of_stack_prefers_stars_then_sharpness() -> None:
    stack = ["a", "b", "c", "d"]
    scores = {"a": (3, 40.0), "b": (4, 10.0), "c": (4, 55.0), "d": (1, 90.0)}
    assert best_of_stack(stack, scores.__getitem__) == "c"
    assert rejects_from_stacks([stack], scores) == ["a", "b", "d"]


def test_best_of_stack_ties_and_missing_scores() -> None:
    assert best_of_stack(["x", "y"], lambda key: 1) == "x"  # tie: the earlier one
    stacks = [["u", "v", "w"], ["p", "q"]]
    scores = {"v": (0, 1.0), "p": None}
    # u and w have no score: v wins; in the second stack nobody has one: p (first) wins.
    assert rejects_from_stacks(stacks, scores) == ["u", "w", "q"]
    with pytest.raises(ValueError):
        best_of_stack([], lambda key: 0)
