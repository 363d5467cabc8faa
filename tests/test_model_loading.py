"""Loading SD 1.x models (single files, diffusers folders), model hashes and the model cache.

Everything runs on tiny random-weight models written by ``tests/tiny_sd.py``; nothing is
downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import pickle
import subprocess
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from charstudio.engine import model_hash as mh
from charstudio.engine.model_loading import (
    CorruptCheckpointError,
    ModelCache,
    ModelLoadError,
    ModelNotFoundError,
    NotSD1CheckpointError,
    UnsafeCheckpointError,
    load_sd15,
    sd15_config,
)
from tests.tiny_sd import (
    TINY_CONFIGS,
    TINY_UNET,
    TinySD,
    ldm_state_dict,
    tiny_components,
    write_diffusers_folder,
    write_ldm_checkpoint,
)

NOT_SD1 = "this is not a Stable Diffusion 1.x checkpoint"


@pytest.fixture(scope="module")
def tiny() -> TinySD:
    return tiny_components(seed=0)


@pytest.fixture(scope="module")
def files(tiny: TinySD, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "safetensors": write_ldm_checkpoint(root / "tiny-char.safetensors", tiny),
        "ckpt": write_ldm_checkpoint(root / "tiny-char.ckpt", tiny),
        "diffusers": write_diffusers_folder(root / "tiny-diffusers", tiny),
    }


@pytest.fixture
def hash_cache(tmp_path: Path) -> Path:
    return tmp_path / "hashes.json"


def load_tiny(path: Path | str, **kwargs: object):
    return load_sd15(path, config_overrides=TINY_CONFIGS, **kwargs)  # type: ignore[arg-type]


def assert_same_weights(original: TinySD, loaded: object) -> None:
    for part in ("unet", "vae", "text_encoder"):
        want = getattr(original, part).state_dict()
        got = getattr(loaded, part).state_dict()
        assert want.keys() == got.keys(), part
        different = [k for k in want if not torch.equal(want[k], got[k])]
        assert not different, f"{part}: {different[:5]}"


def assert_same_outputs(original: TinySD, loaded: object) -> None:
    generator = torch.Generator().manual_seed(7)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    ids = torch.randint(0, 49408, (1, 77), generator=generator)
    with torch.no_grad():
        want_text = original.text_encoder(ids).last_hidden_state
        got_text = loaded.text_encoder(ids).last_hidden_state  # type: ignore[attr-defined]
        assert torch.equal(want_text, got_text)
        want = original.unet(sample, 10, encoder_hidden_states=want_text).sample
        got = loaded.unet(sample, 10, encoder_hidden_states=got_text).sample  # type: ignore[attr-defined]
        assert torch.equal(want, got)
        assert torch.equal(original.vae.decode(sample).sample, loaded.vae.decode(sample).sample)  # type: ignore[attr-defined]


# -- single files --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetensors", "ckpt"])
def test_single_file_round_trip_is_bit_exact(
    kind: str, tiny: TinySD, files: dict[str, Path], hash_cache: Path
) -> None:
    path = files[kind]
    loaded = load_tiny(path, hash_cache=hash_cache)
    assert_same_weights(tiny, loaded)
    assert_same_outputs(tiny, loaded)
    assert loaded.kind == kind
    assert loaded.name == "tiny-char"
    assert loaded.source == path
    assert loaded.model_hash == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert loaded.scheduler_config["beta_schedule"] == "scaled_linear"
    assert not any(p.is_meta for p in loaded.unet.parameters())


def test_loaded_weights_do_not_alias_the_file(
    tiny: TinySD, tmp_path: Path, hash_cache: Path
) -> None:
    # safetensors maps the file; the model must own its memory (Windows file locks, rewrites).
    path = write_ldm_checkpoint(tmp_path / "m.safetensors", tiny)
    loaded = load_tiny(path, hash_cache=hash_cache)
    before = loaded.unet.conv_in.weight.clone()
    write_ldm_checkpoint(path, tiny_components(seed=5))
    assert torch.equal(loaded.unet.conv_in.weight, before)


def test_dtype_is_applied(files: dict[str, Path]) -> None:
    loaded = load_tiny(files["safetensors"], dtype="fp16", compute_hash=False)
    assert {p.dtype for p in loaded.unet.parameters()} == {torch.float16}
    assert {p.dtype for p in loaded.text_encoder.parameters()} == {torch.float16}
    assert loaded.model_hash is None


def test_old_clip_key_layout_without_text_model_level(tiny: TinySD, tmp_path: Path) -> None:
    state = {
        k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
        for k, v in ldm_state_dict(tiny).items()
    }
    path = tmp_path / "old.safetensors"
    save_file(state, str(path))
    assert_same_weights(tiny, load_tiny(path, compute_hash=False))


def test_inpainting_checkpoint_gets_its_input_channels(tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    model = tiny_components(seed=3)
    model.unet = UNet2DConditionModel(**{**TINY_UNET, "in_channels": 9})
    path = write_ldm_checkpoint(tmp_path / "inpaint.safetensors", model)
    loaded = load_tiny(path, compute_hash=False)
    assert loaded.unet.config.in_channels == 9
    assert_same_weights(model, loaded)


def test_lightning_ckpt_with_callback_object_loads(
    tiny: TinySD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Old Lightning checkpoints pickle the ModelCheckpoint class; it is received inertly.
    names = [
        "pytorch_lightning",
        "pytorch_lightning.callbacks",
        "pytorch_lightning.callbacks.model_checkpoint",
    ]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    callback = type("ModelCheckpoint", (), {"__module__": names[-1]})
    sys.modules[names[-1]].ModelCheckpoint = callback  # type: ignore[attr-defined]
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": ldm_state_dict(tiny), "callbacks": {callback: {"k": 1}}}, path)
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    assert_same_weights(tiny, load_tiny(path, compute_hash=False))


_side_effects: list[str] = []


def _record_side_effect() -> None:
    _side_effects.append("ran")


class _Payload:
    """Unpickling this calls a function: exactly what a malicious .ckpt would do."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_record_side_effect, ())


class _CustomState:
    pass


@pytest.mark.parametrize("payload", [_Payload(), _CustomState()], ids=["reduce", "class"])
def test_unsafe_pickle_is_refused(payload: object, tiny: TinySD, tmp_path: Path) -> None:
    path = tmp_path / "suspicious.ckpt"
    torch.save({"state_dict": ldm_state_dict(tiny), "extra": payload}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"suspicious\.ckpt") as info:
        load_tiny(path)
    assert "safetensors" in str(info.value)
    assert _side_effects == []
    # Plain pickle.dump files (not torch.save's zip) are refused too.
    legacy = tmp_path / "legacy.ckpt"
    legacy.write_bytes(pickle.dumps({"state_dict": {}, "extra": payload}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"legacy\.ckpt"):
        load_tiny(legacy)
    assert _side_effects == []


# -- files that are not SD 1.x checkpoints -------------------------------------------------


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("keys", "hint"),
    [
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "LoRA"),
        (["unet.down_blocks.0.attentions.0.to_q.lora_A.weight"], "LoRA"),
        (["conditioner.embedders.1.model.ln_final.weight", "model.diffusion_model.x"], "SDXL"),
        (["cond_stage_model.model.ln_final.weight", "model.diffusion_model.x"], "2.x"),
        (["emb_params"], "embedding"),
        (["encoder.down.0.block.0.conv1.weight", "decoder.conv_in.weight"], "VAE"),
        (["some.random.tensor", "another"], "no UNet"),
        (["model.diffusion_model.input_blocks.0.0.weight"], "no CLIP text encoder"),
    ],
)
def test_other_files_are_refused_clearly(keys: list[str], hint: str, tmp_path: Path) -> None:
    path = _save(tmp_path / "other.safetensors", {k: torch.zeros(2, 2) for k in keys})
    with pytest.raises(NotSD1CheckpointError, match=NOT_SD1) as info:
        load_tiny(path)
    assert hint in str(info.value)


def test_embedding_pt_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fr3nch.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.zeros(2, 768)}}, path)
    with pytest.raises(NotSD1CheckpointError, match="embedding"):
        load_tiny(path)


def test_wrong_architecture_names_the_mismatch(files: dict[str, Path]) -> None:
    # The tiny file against the real SD 1.5 configs (built on the meta device: no cost).
    with pytest.raises(NotSD1CheckpointError, match=r"SD 1\.5's shapes"):
        load_sd15(files["safetensors"], compute_hash=False)


def test_incomplete_checkpoint(tiny: TinySD, tmp_path: Path) -> None:
    state = ldm_state_dict(tiny)
    del state["model.diffusion_model.out.2.weight"]
    path = _save(tmp_path / "partial.safetensors", state)
    with pytest.raises(NotSD1CheckpointError, match="incomplete"):
        load_tiny(path, compute_hash=False)


def test_truncated_and_garbage_files(files: dict[str, Path], tmp_path: Path) -> None:
    for kind in ("safetensors", "ckpt"):
        data = files[kind].read_bytes()
        cut = tmp_path / f"cut.{kind}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CorruptCheckpointError, match=rf"cut\.{kind}"):
            load_tiny(cut)
    for name, data in [("empty.safetensors", b""), ("text.safetensors", b"hello world, no")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CorruptCheckpointError, match=name.replace(".", r"\.")):
            load_tiny(tmp_path / name)


def test_missing_files(tmp_path: Path, files: dict[str, Path]) -> None:
    missing = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(ModelNotFoundError, match=r"model\.safetensors"):
        load_tiny(missing)
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin
        load_tiny(missing)
    with pytest.raises(ModelNotFoundError, match="VAE"):
        load_tiny(files["safetensors"], vae=tmp_path / "missing.vae.pt")


def test_hub_id_needs_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_sd15("someone/some-sd15-model")


def test_folder_without_model_index(tmp_path: Path) -> None:
    with pytest.raises(NotSD1CheckpointError, match=r"model_index\.json"):
        load_tiny(tmp_path)


# -- diffusers folders and separate VAEs ---------------------------------------------------


def test_diffusers_folder(tiny: TinySD, files: dict[str, Path]) -> None:
    loaded = load_tiny(files["diffusers"])
    assert_same_weights(tiny, loaded)
    assert loaded.kind == "diffusers"
    assert loaded.name == "tiny-diffusers"
    assert loaded.model_hash is None
    assert loaded.scheduler_config["_class_name"] == "PNDMScheduler"


@pytest.mark.parametrize("layout", ["ldm.pt", "ldm.safetensors", "diffusers.safetensors", "folder"])
def test_separate_vae(
    layout: str, files: dict[str, Path], tmp_path: Path, hash_cache: Path
) -> None:
    other = tiny_components(seed=11)
    if layout == "folder":
        vae_path = tmp_path / "vae-folder"
        other.vae.save_pretrained(vae_path)
    elif layout.startswith("ldm"):
        # A1111-style VAE files: the first_stage_model part, prefix removed, often in a dict.
        state = {
            k.removeprefix("first_stage_model."): v
            for k, v in ldm_state_dict(other).items()
            if k.startswith("first_stage_model.")
        }
        state["loss.logvar"] = torch.zeros(())  # training leftovers some VAE files carry
        vae_path = tmp_path / f"kl-f8.vae.{layout.split('.')[1]}"
        if vae_path.suffix == ".pt":
            torch.save({"state_dict": state}, vae_path)
        else:
            save_file(state, str(vae_path))
    else:
        vae_path = _save(tmp_path / "vae.safetensors", dict(other.vae.state_dict()))
    loaded = load_tiny(files["safetensors"], vae=vae_path, hash_cache=hash_cache)
    want, got = other.vae.state_dict(), loaded.vae.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert loaded.vae_source == vae_path
    if layout != "folder":
        assert loaded.vae_hash == hashlib.sha256(vae_path.read_bytes()).hexdigest()[:10]
        assert loaded.vae_name == vae_path.name


def test_separate_vae_rejects_a_lora(files: dict[str, Path], tmp_path: Path) -> None:
    lora = _save(tmp_path / "style.safetensors", {"lora_unet_x.lora_down.weight": torch.zeros(1)})
    with pytest.raises(NotSD1CheckpointError, match=r"not a Stable Diffusion 1\.x VAE"):
        load_tiny(files["safetensors"], vae=lora)


# -- shipped configs -----------------------------------------------------------------------


def test_shipped_configs_describe_sd15() -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_config = sd15_config("unet")
    text_config = sd15_config("text_encoder")
    assert unet_config["cross_attention_dim"] == text_config["hidden_size"] == 768
    assert sd15_config("scheduler")["num_train_timesteps"] == 1000
    assert sd15_config("unet", overrides={"unet": {"sample_size": 8}})["sample_size"] == 8
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(sd15_config("vae"))
        text = CLIPTextModel(
            CLIPTextConfig(**{k: v for k, v in text_config.items() if k != "architectures"})
        )

    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    # The published parameter counts of SD 1.5's components.
    assert count(unet) == 859_520_964
    assert count(vae) == 83_653_863
    assert count(text) == 123_060_480


def test_module_imports_no_torch() -> None:
    code = (
        "import sys, charstudio.engine.model_loading, charstudio.engine.model_hash;"
        "bad = [m for m in ('torch', 'diffusers', 'transformers', 'PySide6') if m in sys.modules];"
        "sys.exit(', '.join(bad) or None)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- model hash ----------------------------------------------------------------------------


@pytest.fixture
def counted_sha(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = mh.sha256_file

    def counting(path: Path, **kwargs: object) -> str:
        calls.append(Path(path))
        return real(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mh, "sha256_file", counting)
    return calls


def test_model_hash_is_sha256_prefix_and_cached(
    tmp_path: Path, hash_cache: Path, counted_sha: list[Path]
) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(os.urandom(3 * (1 << 20) + 123))  # several 1 MiB chunks and a tail
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    assert mh.model_hash(model, cache_file=hash_cache) == expected[:10]
    assert mh.model_hash(model, cache_file=hash_cache) == expected[:10]
    assert len(counted_sha) == 1
    # Persisted: a fresh cache object reading the same file does not hash again.
    assert mh.HashCache(hash_cache).sha256(model) == expected
    assert len(counted_sha) == 1
    assert json.loads(hash_cache.read_text())["entries"]
    # A changed file (size/mtime) is hashed again.
    model.write_bytes(b"new content")
    assert (
        mh.model_hash(model, cache_file=hash_cache)
        == hashlib.sha256(b"new content").hexdigest()[:10]
    )
    assert len(counted_sha) == 2


def test_broken_hash_cache_is_ignored(tmp_path: Path, counted_sha: list[Path]) -> None:
    model = tmp_path / "m.ckpt"
    model.write_bytes(b"abc")
    cache = tmp_path / "broken.json"
    cache.write_text("{not json")
    assert mh.HashCache(cache).sha256(model) == hashlib.sha256(b"abc").hexdigest()
    assert json.loads(cache.read_text())["version"] == 1


def test_progress_reports_bytes(tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(b"x" * ((1 << 20) + 5))
    seen: list[tuple[int, int]] = []
    mh.sha256_file(model, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1 << 20, (1 << 20) + 5), ((1 << 20) + 5, (1 << 20) + 5)]


def test_legacy_hash(tmp_path: Path) -> None:
    model = tmp_path / "old.ckpt"
    data = os.urandom(0x100000 + 0x20000)
    model.write_bytes(data)
    assert mh.legacy_model_hash(model) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    small = tmp_path / "small.pt"
    small.write_bytes(b"tiny")
    assert mh.legacy_model_hash(small) == hashlib.sha256(b"").hexdigest()[:8]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert mh.default_cache_dir() == tmp_path / "Local" / "charstudio" / "Cache"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mh.default_cache_dir() == tmp_path / "xdg" / "charstudio"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert mh.default_cache_dir() == Path.home() / ".cache" / "charstudio"


# -- model cache ---------------------------------------------------------------------------


def test_model_cache_keeps_one_model_and_frees_the_old(
    files: dict[str, Path], tmp_path: Path, hash_cache: Path
) -> None:
    loads: list[Path | str] = []

    def loader(path: Path | str, **kwargs: object):
        loads.append(path)
        return load_tiny(path, hash_cache=hash_cache, **kwargs)

    cache = ModelCache(loader)
    first = cache.get(files["safetensors"])
    assert cache.get(files["safetensors"]) is first
    assert len(loads) == 1
    unet_ref = weakref.ref(first.unet)
    components_ref = weakref.ref(first)
    del first

    second = cache.get(files["ckpt"])
    gc.collect()
    assert unet_ref() is None and components_ref() is None
    assert cache.current is second
    assert len(loads) == 2

    # A file replaced in place (new mtime) is loaded again.
    stat = files["ckpt"].stat()
    os.utime(files["ckpt"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache.get(files["ckpt"]) is not second
    assert len(loads) == 3

    ref = weakref.ref(cache.current)  # type: ignore[arg-type]
    del second
    cache.clear()
    assert ref() is None and cache.current is None


def test_a_text_encoder_smaller_than_the_clip_vocabulary_is_refused_when_it_loads(
    tmp_path: Path,
) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.weights import set_random_weights

    model = tiny_components(seed=4)
    small = CLIPTextConfig(**{**TINY_CONFIGS["text_encoder"], "vocab_size": 1000})
    model.text_encoder = set_random_weights(CLIPTextModel(small), 4)
    folder = write_diffusers_folder(tmp_path / "odd-model", model)
    # Without the check, the first prompt with a token id above 999 fails with IndexError.
    with pytest.raises(
        NotSD1CheckpointError, match=r"odd-model: .* 1,000 token embeddings.*49,408"
    ):
        load_sd15(folder, compute_hash=False)
