"""Textual-inversion files: A1111 .pt, safetensors ``emb_params``, diffusers concepts, library."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from charstudio.engine import embeddings as emb_module
from charstudio.engine.embeddings import (
    Embedding,
    EmbeddingError,
    EmbeddingLibrary,
    load_embedding,
    save_a1111_pt,
    save_safetensors,
)


def vectors(n: int = 2, width: int = 768, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


@dataclass
class NotATensor:  # a custom class: unpickling it needs an arbitrary global
    value: int


# -- writers and readers -------------------------------------------------------------------


def test_a1111_pt_round_trip_loads_with_weights_only(tmp_path: Path) -> None:
    vec = vectors(2)
    path = save_a1111_pt(tmp_path / "fr3nch-150.pt", "fr3nch", vec, 150, "6ce0161689", "v1-5")

    raw = torch.load(path, weights_only=True)
    assert set(raw) == {
        "string_to_token",
        "string_to_param",
        "name",
        "step",
        "sd_checkpoint",
        "sd_checkpoint_name",
    }
    assert raw["string_to_token"] == {"*": 265}
    assert torch.equal(raw["string_to_param"]["*"], vec)
    assert (raw["name"], raw["step"], raw["sd_checkpoint"]) == ("fr3nch", 150, "6ce0161689")

    loaded = load_embedding(path)
    assert loaded.name == "fr3nch-150"  # the file stem, as A1111
    assert torch.equal(loaded.vectors, vec)
    assert (loaded.step, loaded.sd_checkpoint, loaded.sd_checkpoint_name) == (
        150,
        "6ce0161689",
        "v1-5",
    )
    assert loaded.source == path and loaded.n_vectors == 2 and loaded.width == 768
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_saved_vectors_are_a_private_copy(tmp_path: Path) -> None:
    vec = torch.nn.Parameter(vectors(1))
    path = save_a1111_pt(tmp_path / "a.pt", "a", vec)
    with torch.no_grad():
        vec.add_(1.0)
    assert not torch.equal(load_embedding(path).vectors, vec.detach())
    assert load_embedding(path).step is None


def test_safetensors_round_trip(tmp_path: Path) -> None:
    vec = vectors(3)
    path = save_safetensors(tmp_path / "fr3nch.safetensors", vec, {"step": 10, "name": "fr3nch"})
    assert set(load_file(path)) == {"emb_params"}
    loaded = load_embedding(path)
    assert loaded.name == "fr3nch" and torch.equal(loaded.vectors, vec)


def test_diffusers_concepts(tmp_path: Path) -> None:
    torch.save({"<fr3nch>": vectors(1)[0]}, tmp_path / "learned_embeds.bin")  # [768]
    one = load_embedding(tmp_path / "learned_embeds.bin")
    assert one.name == "learned_embeds" and one.vectors.shape == (1, 768)

    save_file({"<fr3nch>": vectors(4)}, str(tmp_path / "concept.safetensors"))
    assert load_embedding(tmp_path / "concept.safetensors").n_vectors == 4


def test_half_precision_vectors_load_as_float32(tmp_path: Path) -> None:
    save_file({"emb_params": vectors(2).half()}, str(tmp_path / "h.safetensors"))
    assert load_embedding(tmp_path / "h.safetensors").vectors.dtype == torch.float32


@pytest.mark.slow  # importing diffusers' loaders takes seconds
def test_written_files_read_by_diffusers_loader(tmp_path: Path) -> None:
    from diffusers.loaders.textual_inversion import (
        TextualInversionLoaderMixin,
        load_textual_inversion_state_dicts,
    )

    vec = vectors(2)
    pt = save_a1111_pt(tmp_path / "fr3nch.pt", "fr3nch", vec, 5)
    st = save_safetensors(tmp_path / "fr3nch.safetensors", vec)

    class NoVocab:
        def get_vocab(self) -> dict[str, int]:
            return {}

    for path in (pt, st):
        state_dicts = load_textual_inversion_state_dicts(
            [str(path)], weight_name=path.name, local_files_only=True
        )
        tokens, embs = TextualInversionLoaderMixin._retrieve_tokens_and_embeddings(
            ["fr3nch"], state_dicts, NoVocab()
        )
        assert tokens == ["fr3nch"] and torch.equal(embs[0], vec)


# -- refusals --------------------------------------------------------------------------------


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": vectors(1)}, "extra": NotATensor(1)}, path)
    with pytest.raises(EmbeddingError, match="unsafe unpickling") as info:
        load_embedding(path)
    assert str(path) in str(info.value)


def test_several_terms_are_rejected(tmp_path: Path) -> None:
    torch.save({"string_to_param": {"*": vectors(1), "x": vectors(1)}}, tmp_path / "two.pt")
    with pytest.raises(EmbeddingError, match="2 terms"):
        load_embedding(tmp_path / "two.pt")

    save_file({"a": vectors(1), "b": vectors(1)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(EmbeddingError, match="must hold one term"):
        load_embedding(tmp_path / "two.safetensors")


def test_wrong_width_is_rejected_with_the_family(tmp_path: Path) -> None:
    save_safetensors(tmp_path / "sd2.safetensors", vectors(1, 1024))
    with pytest.raises(EmbeddingError, match=r"1024 wide \(SD 2.x\).*needs 768"):
        load_embedding(tmp_path / "sd2.safetensors")
    assert load_embedding(tmp_path / "sd2.safetensors", width=None).width == 1024

    save_file({"clip_l": vectors(1), "clip_g": vectors(1, 1280)}, str(tmp_path / "xl.safetensors"))
    with pytest.raises(EmbeddingError, match="SDXL"):
        load_embedding(tmp_path / "xl.safetensors")


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    torch.save({"name": "x"}, tmp_path / "novec.pt")
    torch.save({"string_to_param": {"*": torch.zeros(2, 3, 768)}}, tmp_path / "3d.pt")
    for name in ("junk.pt", "junk.safetensors", "novec.pt", "3d.pt"):
        with pytest.raises(EmbeddingError, match=name):
            load_embedding(tmp_path / name)
    with pytest.raises(EmbeddingError, match="unsupported"):
        load_embedding(tmp_path / "x.png")


# -- library ---------------------------------------------------------------------------------


def test_library_names_and_priorities(tmp_path: Path) -> None:
    project, user = tmp_path / "embeddings", tmp_path / "user"
    save_a1111_pt(project / "fr3nch.pt", "fr3nch", vectors(2, seed=1))
    save_a1111_pt(user / "fr3nch.pt", "fr3nch", vectors(5, seed=2))  # shadowed by the project
    save_safetensors(user / "sub" / "Style.safetensors", vectors(3))
    save_a1111_pt(user / "both.pt", "both", vectors(1, seed=3))
    save_safetensors(user / "both.safetensors", vectors(4, seed=4))  # preferred format
    (user / "notes.txt").write_text("not an embedding")
    (user / "empty.pt").write_bytes(b"")

    library = EmbeddingLibrary([project, user, tmp_path / "absent"])
    assert library.names() == {"fr3nch": 2, "Style": 3, "both": 4}
    assert library.get("fr3nch").source == project / "fr3nch.pt"
    assert "empty" in library.errors()
    assert "fr3nch" in library and "nope" not in library


def test_library_lookup_by_name(tmp_path: Path) -> None:
    save_safetensors(tmp_path / "MyChar.safetensors", vectors(2))
    library = EmbeddingLibrary([tmp_path])
    assert library.get("MyChar").name == "MyChar"
    assert library.get("mychar").name == "MyChar"  # unique case-insensitive match
    with pytest.raises(KeyError, match="nobody"):
        library.get("nobody")
    assert library.missing(["mychar", "nobody", "MyChar", "nobody"]) == ["nobody"]
    assert set(library.vectors()) == {"MyChar"}


def test_library_reports_broken_files(tmp_path: Path) -> None:
    save_safetensors(tmp_path / "good.safetensors", vectors(1))
    save_safetensors(tmp_path / "wide.safetensors", vectors(1, 1024))
    torch.save({"x": NotATensor(1)}, tmp_path / "evil.pt")
    library = EmbeddingLibrary([tmp_path])
    assert library.names() == {"good": 1}
    errors = library.errors()
    assert set(errors) == {"wide", "evil"}
    assert "unsafe" in errors["evil"] and "1024" in errors["wide"]
    with pytest.raises(EmbeddingError):
        library.get("wide")
    assert library.missing(["wide"]) == ["wide"]


def test_library_custom_width(tmp_path: Path) -> None:
    save_safetensors(tmp_path / "tiny.safetensors", vectors(2, 32))
    assert EmbeddingLibrary([tmp_path], width=32).names() == {"tiny": 2}
    assert EmbeddingLibrary([tmp_path]).names() == {}


def test_library_cache_follows_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = emb_module.load_embedding

    def counting(path: Path, **kwargs: object) -> Embedding:
        calls.append(path)
        return real(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(emb_module, "load_embedding", counting)
    path = save_safetensors(tmp_path / "a.safetensors", vectors(1))
    library = EmbeddingLibrary([tmp_path])
    assert library.names() == {"a": 1}
    library.names()
    library.get("a")
    assert len(calls) == 1  # cached

    save_safetensors(path, vectors(3))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert library.names() == {"a": 3}  # reloaded after the change
    assert len(calls) == 2

    save_safetensors(tmp_path / "b.safetensors", vectors(2))  # new files appear at once
    assert library.names() == {"a": 3, "b": 2}


def test_shorthash_is_a1111s(tmp_path: Path) -> None:
    import hashlib

    path = save_safetensors(tmp_path / "a.safetensors", vectors(1))
    loaded = load_embedding(path)
    full = hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.sha256 == full and loaded.shorthash == full[:12]
    assert Embedding("x", vectors(1)).shorthash is None


def test_import_is_cheap() -> None:
    code = (
        "import sys; import charstudio.engine.embeddings, charstudio.engine.conditioning; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
        "assert not any(m.startswith('PySide6') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
