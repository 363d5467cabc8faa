"""LoRA files: kohya / peft / diffusers formats, merging into a tiny SD model, restore, library."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from charstudio.engine.loras import (  # noqa: E402
    AppliedLoras,
    LoraError,
    LoraFile,
    LoraLibrary,
    LoraPatcher,
    apply_loras,
    load_lora,
    lora_hashes_infotext,
    loras_in_prompt,
    te_unet_weights,
)
from tests.tiny_sd import TINY_UNET, tiny_components, unet_key_to_ldm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Modules of the tiny model (see tests/tiny_sd.py) that the test LoRAs patch.
ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
LINEAR_TARGETS = {
    "unet": [
        f"{ATTN}.to_q",
        f"{ATTN}.to_out.0",
        "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
    ],
    "text_encoder": [
        "text_model.encoder.layers.0.self_attn.q_proj",
        "text_model.encoder.layers.1.mlp.fc1",
    ],
}
CONV3 = "down_blocks.0.resnets.0.conv1"  # Conv2d 32 -> 32, 3x3
CONV1 = "down_blocks.0.attentions.0.proj_in"  # Conv2d 32 -> 32, 1x1


@functools.cache
def _pristine():
    return tiny_components(3)


def fresh():
    """A new copy of one tiny model (building one costs half a second; copying, milliseconds)."""
    return copy.deepcopy(_pristine())


@dataclass
class Factors:
    down: torch.Tensor
    up: torch.Tensor


def make_factors(shape: tuple[int, ...], rank: int, seed: int) -> Factors:
    """Random factors for a weight of ``shape`` (Linear [out, in] or Conv2d [out, in, kh, kw])."""
    gen = torch.Generator().manual_seed(seed)
    out_features, in_features, *kernel = shape
    down = torch.randn(rank, in_features, *kernel, generator=gen) * 0.1
    up = torch.randn(out_features, rank, *([1, 1] if kernel else []), generator=gen) * 0.1
    return Factors(down, up)


def model_path(model, component: str, path: str) -> str:
    """The model's own name for a module: transformers 5's CLIP has no ``text_model.`` level,
    while LoRA files (made with transformers 4) name it."""
    if component == "text_encoder" and not hasattr(model.text_encoder, "text_model"):
        return path.removeprefix("text_model.")
    return path


def module_of(model, component: str, path: str) -> torch.nn.Module:
    root = model.unet if component == "unet" else model.text_encoder
    return root.get_submodule(model_path(model, component, path))


def state_key(model, component: str, path: str) -> str:
    """The :func:`snapshot` key of a module's weight."""
    prefix = "unet." if component == "unet" else "te."
    return f"{prefix}{model_path(model, component, path)}.weight"


def linear_factors(model, rank: int = 4, seed: int = 0) -> dict[tuple[str, str], Factors]:
    out = {}
    for i, (component, paths) in enumerate(LINEAR_TARGETS.items()):
        for j, path in enumerate(paths):
            shape = tuple(module_of(model, component, path).weight.shape)
            out[(component, path)] = make_factors(shape, rank, seed * 100 + i * 10 + j)
    return out


def kohya_state(
    factors: dict[tuple[str, str], Factors], alpha: float | None = None, te_prefix: str = "lora_te_"
) -> dict[str, torch.Tensor]:
    state = {}
    for (component, path), f in factors.items():
        prefix = "lora_unet_" if component == "unet" else te_prefix
        stem = prefix + path.replace(".", "_")
        state[f"{stem}.lora_down.weight"] = f.down.clone()
        state[f"{stem}.lora_up.weight"] = f.up.clone()
        if alpha is not None:
            state[f"{stem}.alpha"] = torch.tensor(float(alpha))
    return state


def peft_state(factors: dict[tuple[str, str], Factors], style: str = "diffusers") -> dict:
    state = {}
    for (component, path), f in factors.items():
        # diffusers' save_lora_weights, or get_peft_model_state_dict of a PeftModel
        stem = f"{component}.{path}" if style == "diffusers" else f"base_model.model.{path}"
        if style == "flat":  # a text encoder named as transformers 5 names it
            stem = f"{component}.{path.removeprefix('text_model.')}"
        state[f"{stem}.lora_A.weight"] = f.down.clone()
        state[f"{stem}.lora_B.weight"] = f.up.clone()
    return state


def write(path: Path, state: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def snapshot(model) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, root in (("unet.", model.unet), ("te.", model.text_encoder)):
        for key, value in root.state_dict().items():
            out[prefix + key] = value.detach().clone()
    return out


def changed_keys(model, before: dict[str, torch.Tensor]) -> set[str]:
    now = snapshot(model)
    return {k for k, v in before.items() if not torch.equal(v, now[k])}


def weight_of(model, component: str, path: str) -> torch.Tensor:
    return module_of(model, component, path).weight.detach().clone()


def clip_output(model, ids: list[int] | None = None) -> torch.Tensor:
    tokens = torch.tensor([ids or [49406, 320, 1125, 539, 320, 2368, 49407]])
    with torch.no_grad():
        return model.text_encoder(tokens).last_hidden_state


# -- formats -------------------------------------------------------------------------------


def test_kohya_and_peft_formats_merge_identically(tmp_path: Path) -> None:
    base = fresh()
    factors = linear_factors(base, rank=4)
    files = {
        "kohya": write(tmp_path / "kohya.safetensors", kohya_state(factors, alpha=4)),
        "kohya_no_alpha": write(tmp_path / "k2.safetensors", kohya_state(factors)),
        "kohya_te1": write(
            tmp_path / "k3.safetensors", kohya_state(factors, te_prefix="lora_te1_")
        ),
        "peft": write(tmp_path / "peft.safetensors", peft_state(factors)),
        "peft_base": write(tmp_path / "peft_base.safetensors", peft_state(factors, "base_model")),
        "peft_flat": write(tmp_path / "peft_flat.safetensors", peft_state(factors, "flat")),
    }
    # A .bin as diffusers' first LoRA format wrote it: attention processors, torch.save.
    old = {}
    for (component, path), f in factors.items():
        if component == "unet" and path.startswith(ATTN):
            proj = {"to_q": "to_q_lora", "to_out.0": "to_out_lora"}[path[len(ATTN) + 1 :]]
            stem = f"{ATTN}.processor.{proj}"
        else:
            stem = f"{component}.{path}.lora_linear_layer"
        old[f"{stem}.down.weight"] = f.down.clone()
        old[f"{stem}.up.weight"] = f.up.clone()
    files["processor_bin"] = tmp_path / "old.bin"
    torch.save(old, files["processor_bin"])

    results = {}
    for label, path in files.items():
        model = fresh()
        lora = load_lora(path)
        assert len(lora.modules) == len(factors), label
        applied = apply_loras(model.unet, model.text_encoder, [(lora, 0.7)])
        assert applied.weights_changed == len(factors), label
        assert applied.unmatched == {}, label
        results[label] = snapshot(model)

    reference = results.pop("kohya")
    for label, state in results.items():
        for key, value in reference.items():
            assert torch.equal(value, state[key]), (label, key)

    # And the merge is the formula: W + weight * up @ down (alpha = rank: scale 1).
    original = snapshot(base)
    for (component, path), f in factors.items():
        key = state_key(base, component, path)
        torch.testing.assert_close(reference[key], original[key] + 0.7 * f.up @ f.down)
    untouched = set(original) - {state_key(base, c, p) for c, p in factors}
    assert all(torch.equal(original[k], reference[k]) for k in untouched)


@pytest.mark.slow
def test_a_lora_saved_by_diffusers_matches_peft_running_it(tmp_path: Path) -> None:
    """The reference: peft runs the adapter itself; merging diffusers' saved file must agree."""
    peft = pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    peft_model = fresh()
    unet_config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "conv1", "ff.net.2"],
        init_lora_weights=False,  # random B: an untrained adapter would change nothing
    )
    te_config = peft.LoraConfig(
        r=2, lora_alpha=1, target_modules=["q_proj", "fc1"], init_lora_weights=False
    )
    peft_model.unet.add_adapter(unet_config)
    peft_model.text_encoder.add_adapter(te_config)
    layers = {
        name: convert_state_dict_to_diffusers(peft.utils.get_peft_model_state_dict(module))
        for name, module in (("unet", peft_model.unet), ("te", peft_model.text_encoder))
    }
    StableDiffusionPipeline.save_lora_weights(
        tmp_path,
        unet_lora_layers=layers["unet"],
        text_encoder_lora_layers=layers["te"],
        unet_lora_adapter_metadata=unet_config.to_dict(),
        text_encoder_lora_adapter_metadata=te_config.to_dict(),
    )
    lora = load_lora(tmp_path / "pytorch_lora_weights.safetensors")
    merged = fresh()
    applied = apply_loras(merged.unet, merged.text_encoder, [(lora, 1.0)])
    assert applied.unmatched == {} and applied.weights_changed == len(lora.modules) > 20

    gen = torch.Generator().manual_seed(0)
    latents, context = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 7, 32, generator=gen)
    with torch.no_grad():
        expected = peft_model.unet(latents, 10, context).sample
        torch.testing.assert_close(
            merged.unet(latents, 10, context).sample, expected, atol=1e-4, rtol=1e-4
        )
        assert (expected - fresh().unet(latents, 10, context).sample).abs().max() > 0.1
    torch.testing.assert_close(clip_output(merged), clip_output(peft_model), atol=1e-4, rtol=1e-4)


def test_alpha_scales_the_update(tmp_path: Path) -> None:
    base = fresh()
    factors = linear_factors(base, rank=4)
    target = ("unet", f"{ATTN}.to_q")
    f = factors[target]
    original = weight_of(base, *target)

    deltas = {}
    sources = {
        "alpha2": kohya_state(factors, alpha=2),  # scale 2 / 4
        "alpha0": kohya_state(factors, alpha=0),  # sd-scripts: 0 means alpha = rank
        "none": kohya_state(factors),
    }
    for label, state in sources.items():
        model = fresh()
        lora = load_lora(write(tmp_path / f"{label}.safetensors", state))
        apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
        deltas[label] = weight_of(model, *target) - original

    torch.testing.assert_close(deltas["alpha2"], 0.5 * f.up @ f.down)
    torch.testing.assert_close(deltas["none"], f.up @ f.down)
    torch.testing.assert_close(deltas["alpha0"], deltas["none"])

    # peft files carry alpha in diffusers' header metadata, per component, with patterns.
    config = {
        "unet.r": 4,
        "unet.lora_alpha": 2,
        "unet.alpha_pattern": {"ff.net.2": 8},
        "text_encoder.r": 4,
        "text_encoder.lora_alpha": 1,
    }
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps(config)}
    lora = load_lora(write(tmp_path / "peft.safetensors", peft_state(factors), meta))
    scales = {key: module.scale for key, module in lora.modules.items()}
    assert scales[target] == 0.5
    assert scales[("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.2")] == 2.0
    assert scales[("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj")] == 0.25

    model = fresh()
    apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
    torch.testing.assert_close(weight_of(model, *target) - original, deltas["alpha2"])


def test_the_weight_scales_the_update_linearly_and_zero_changes_nothing(tmp_path: Path) -> None:
    base = fresh()
    before = snapshot(base)
    lora = load_lora(write(tmp_path / "x.safetensors", kohya_state(linear_factors(base), 4)))
    target = ("text_encoder", "text_model.encoder.layers.1.mlp.fc1")
    original = weight_of(base, *target)

    deltas = {}
    for weight in (1.0, 0.5, -1.5):
        model = fresh()
        apply_loras(model.unet, model.text_encoder, [(lora, weight)])
        deltas[weight] = weight_of(model, *target) - original
    assert deltas[1.0].abs().max() > 1e-3
    torch.testing.assert_close(deltas[0.5], 0.5 * deltas[1.0])
    torch.testing.assert_close(deltas[-1.5], -1.5 * deltas[1.0])

    applied = apply_loras(base.unet, base.text_encoder, [(lora, 0.0)])
    assert applied.weights_changed == 0
    assert changed_keys(base, before) == set()


def test_text_encoder_and_unet_weights_apply_separately(tmp_path: Path) -> None:
    model = fresh()
    before = snapshot(model)
    lora = load_lora(write(tmp_path / "x.safetensors", kohya_state(linear_factors(model))))

    applied = apply_loras(model.unet, model.text_encoder, [(lora, (0.0, 1.0))])
    changed = changed_keys(model, before)
    assert changed and all(k.startswith("unet.") for k in changed)
    applied.restore()

    apply_loras(model.unet, model.text_encoder, [(lora, (1.0, 0.0))])
    changed = changed_keys(model, before)
    assert changed and all(k.startswith("te.") for k in changed)


def test_restore_is_bit_identical_for_every_parameter(tmp_path: Path) -> None:
    model = fresh()
    before = snapshot(model)
    a = load_lora(write(tmp_path / "a.safetensors", kohya_state(linear_factors(model, seed=1), 3)))
    b = load_lora(write(tmp_path / "b.safetensors", peft_state(linear_factors(model, seed=2))))
    conv = make_factors(tuple(module_of(model, "unet", CONV3).weight.shape), 4, 9)
    c_state = {
        f"lora_unet_{CONV3.replace('.', '_')}.lora_down.weight": conv.down,
        f"lora_unet_{CONV3.replace('.', '_')}.lora_up.weight": conv.up,
    }
    c = load_lora(write(tmp_path / "c.safetensors", c_state))

    applied = apply_loras(model.unet, model.text_encoder, [(a, 0.8), (b, -0.3), (c, 1.2)])
    assert len(changed_keys(model, before)) == applied.weights_changed > 0
    applied.restore()
    assert applied.restored
    assert changed_keys(model, before) == set()
    applied.restore()  # a second restore changes nothing
    assert changed_keys(model, before) == set()


def test_half_precision_weights_are_merged_in_float32_and_restored_exactly(tmp_path: Path) -> None:
    model = fresh()
    model.unet.to(torch.float16)
    model.text_encoder.to(torch.bfloat16)
    before = snapshot(model)
    factors = linear_factors(model)
    lora = load_lora(write(tmp_path / "x.safetensors", kohya_state(factors, 4)))

    applied = apply_loras(model.unet, model.text_encoder, [(lora, 1.0), (lora, 0.5)])
    target = ("unet", f"{ATTN}.to_q")
    f = factors[target]
    merged = weight_of(model, *target)
    assert merged.dtype == torch.float16
    # One rounding of (W + 1.5 * up @ down), not two rounded additions.
    expected = (before[state_key(model, *target)].float() + 1.5 * f.up @ f.down).half()
    assert torch.equal(merged, expected)
    applied.restore()
    assert changed_keys(model, before) == set()


def every_unet_module(model) -> list[str]:
    """Every Linear and Conv2d of the tiny UNet: attention, ResNet, sampler and top layers."""
    return [
        name
        for name, module in model.unet.named_modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d)
    ]


def test_ldm_named_lora_changes_what_the_diffusers_named_one_does(tmp_path: Path) -> None:
    """SD 1.x LoRAs named after the original (LDM) UNet, as A1111's own model is named:
    ``lora_unet_input_blocks_1_1_proj_in``, ``lora_unet_middle_block_1_…``,
    ``lora_unet_output_blocks_…``. Names from tests/tiny_sd.py's own diffusers -> LDM mapping."""
    base = fresh()
    factors = {
        ("unet", name): make_factors(tuple(module_of(base, "unet", name).weight.shape), 2, i)
        for i, name in enumerate(every_unet_module(base))
    }
    factors.update(linear_factors(base, rank=2, seed=7))  # and the text encoder, as usual
    diffusers_named = kohya_state(factors, alpha=1)
    ldm_named = {}
    for key, value in diffusers_named.items():
        if key.startswith("lora_unet_"):
            stem, _, role = key.partition(".")
            path = next(p for c, p in factors if "lora_unet_" + p.replace(".", "_") == stem)
            ldm = unet_key_to_ldm(f"{path}.weight", TINY_UNET)
            ldm = ldm.removeprefix("model.diffusion_model.").removesuffix(".weight")
            key = f"lora_unet_{ldm.replace('.', '_')}.{role}"
        ldm_named[key] = value
    assert "lora_unet_input_blocks_1_1_proj_in.lora_down.weight" in ldm_named
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q.lora_up.weight" in ldm_named
    assert "lora_unet_output_blocks_2_1_transformer_blocks_0_ff_net_2.alpha" in ldm_named
    assert "lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight" in ldm_named  # resnet conv1
    assert "lora_unet_output_blocks_1_1_conv.lora_down.weight" in ldm_named  # the upsampler
    assert not set(ldm_named) & {k for k in diffusers_named if k.startswith("lora_unet_")}

    results = {}
    for label, state in (("diffusers", diffusers_named), ("ldm", ldm_named)):
        model = fresh()
        original = snapshot(model)
        lora = load_lora(
            write(tmp_path / f"{label}.safetensors", state, {"ss_base_model_version": "sd_v1"})
        )
        applied = apply_loras(model.unet, model.text_encoder, [(lora, 0.8)])
        assert applied.unmatched == {} and applied.weights_changed == len(factors), label
        results[label] = snapshot(model)
        assert changed_keys(model, original) == {state_key(base, c, p) for c, p in factors}
    for key, value in results["diffusers"].items():
        assert torch.equal(value, results["ldm"][key]), key
    # and the update is the formula, so both are right, not merely equal
    original = snapshot(base)
    key = state_key(base, "unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q")
    f = factors[("unet", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q")]
    torch.testing.assert_close(results["ldm"][key], original[key] + 0.8 * 0.5 * f.up @ f.down)


def test_sd1_ldm_names_are_not_called_sdxl(tmp_path: Path) -> None:
    """An SD 1.x LoRA in LDM names made for a full-size model fits nothing of the tiny one; the
    message must not guess SDXL from the names (A1111's own SD 1.x names) or 1280-wide layers."""
    model = fresh()
    state = {}
    for stem, shape in (
        ("lora_unet_input_blocks_7_1_proj_in", (1280, 1280)),
        ("lora_unet_input_blocks_7_1_transformer_blocks_0_attn2_to_k", (1280, 768)),
        ("lora_unet_output_blocks_3_1_transformer_blocks_0_attn1_to_q", (1280, 1280)),
        ("lora_unet_middle_block_1_transformer_blocks_0_ff_net_2", (1280, 5120)),
    ):
        f = make_factors(shape, 4, len(state))
        state[f"{stem}.lora_down.weight"], state[f"{stem}.lora_up.weight"] = f.down, f.up
    for metadata in (None, {"ss_base_model_version": "sd_v1"}):
        lora = load_lora(write(tmp_path / "sd1_ldm.safetensors", state, metadata))
        with pytest.raises(LoraError, match=r"sd1_ldm\.safetensors.*different model") as info:
            apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
        assert "SDXL" not in str(info.value) and "SD 2" not in str(info.value)
    assert "sd1_ldm" not in LoraLibrary([tmp_path]).errors()


def test_sd2_files_are_named_by_their_text_width_or_metadata(tmp_path: Path) -> None:
    model = fresh()
    stem = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    f = make_factors((1024, 1024), 4, 0)  # OpenCLIP-H is 1024 wide
    state = {f"{stem}.lora_down.weight": f.down, f"{stem}.lora_up.weight": f.up}
    lora = load_lora(write(tmp_path / "sd2.safetensors", state))
    with pytest.raises(LoraError, match=r"sd2\.safetensors.*different model \(SD 2\.x\?\)"):
        apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
    stem = "lora_unet_input_blocks_7_1_proj_in"
    f = make_factors((1280, 1280), 4, 0)
    state = {f"{stem}.lora_down.weight": f.down, f"{stem}.lora_up.weight": f.up}
    lora = load_lora(write(tmp_path / "v.safetensors", state, {"ss_v2": "True"}))
    with pytest.raises(LoraError, match=r"\(SD 2\.x\?\)"):
        apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])


SDXL_METADATA = {"ss_base_model_version": "sdxl_base_v1-0"}


@pytest.mark.parametrize(
    ("keys", "metadata", "reason"),
    [
        (["lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q"], None, "blocks_1_attn1"),
        (["lora_unet_down_blocks_2_attentions_0_transformer_blocks_9_ff_net_2"], None, "blocks_9"),
        (["lora_unet_label_emb_0_0"], None, "label_emb"),
        (["lora_te1_text_model_encoder_layers_0_mlp_fc1"], SDXL_METADATA, "sdxl_base_v1-0"),
    ],
)
def test_real_sdxl_files_are_refused_as_sdxl(
    tmp_path: Path, keys: list[str], metadata: dict | None, reason: str
) -> None:
    state = {}
    for stem in keys:
        state[f"{stem}.lora_down.weight"] = torch.ones(2, 640)
        state[f"{stem}.lora_up.weight"] = torch.ones(640, 2)
    path = write(tmp_path / "xl.safetensors", state, metadata)
    with pytest.raises(LoraError, match=rf"xl\.safetensors: made for SDXL: .*{reason}"):
        load_lora(path)
    assert "made for SDXL" in LoraLibrary([tmp_path]).errors()["xl"]  # from the header alone


def test_locon_conv_layers(tmp_path: Path) -> None:
    model = fresh()
    conv3 = module_of(model, "unet", CONV3)
    conv1 = module_of(model, "unet", CONV1)
    f3 = make_factors(tuple(conv3.weight.shape), 4, 1)
    f1 = make_factors(tuple(conv1.weight.shape), 2, 2)
    gen = torch.Generator().manual_seed(3)
    mid = torch.randn(4, 4, 3, 3, generator=gen) * 0.1
    down_1x1 = torch.randn(4, 32, 1, 1, generator=gen) * 0.1
    x = torch.randn(1, 32, 8, 8, generator=gen)

    def k(path: str) -> str:
        return "lora_unet_" + path.replace(".", "_")

    with torch.no_grad():
        y3, y1 = conv3(x), conv1(x)
        # What the LoRA adds, computed as the network it is: conv(down) then 1x1 conv(up).
        lora3 = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, f3.down, padding=1), f3.up)
        lora1 = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, f1.down), f1.up)
        # CP-decomposed LoCon: 1x1 down, kxk mid, 1x1 up.
        cp = torch.nn.functional.conv2d(
            torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, down_1x1), mid, padding=1),
            f3.up,
        )

    state = {
        f"{k(CONV3)}.lora_down.weight": f3.down,
        f"{k(CONV3)}.lora_up.weight": f3.up,
        f"{k(CONV3)}.alpha": torch.tensor(2.0),  # scale 2 / 4
        f"{k(CONV1)}.lora_down.weight": f1.down,
        f"{k(CONV1)}.lora_up.weight": f1.up,
    }
    lora = load_lora(write(tmp_path / "locon.safetensors", state))
    applied = apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
    with torch.no_grad():
        torch.testing.assert_close(conv3(x), y3 + 0.5 * lora3, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(conv1(x), y1 + lora1, atol=1e-5, rtol=1e-4)
    applied.restore()

    # A 1x1 conv patched by Linear-shaped factors (from a model with linear proj_in) is the same.
    linear = {
        f"{k(CONV1)}.lora_down.weight": f1.down.flatten(1),
        f"{k(CONV1)}.lora_up.weight": f1.up.flatten(1),
    }
    applied = apply_loras(
        model.unet, None, [(load_lora(write(tmp_path / "lin.safetensors", linear)), 1.0)]
    )
    with torch.no_grad():
        torch.testing.assert_close(conv1(x), y1 + lora1, atol=1e-5, rtol=1e-4)
    applied.restore()

    cp_state = {
        f"{k(CONV3)}.lora_down.weight": down_1x1,
        f"{k(CONV3)}.lora_mid.weight": mid,
        f"{k(CONV3)}.lora_up.weight": f3.up,
    }
    lora = load_lora(write(tmp_path / "cp.safetensors", cp_state))
    apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
    with torch.no_grad():
        torch.testing.assert_close(conv3(x), y3 + cp, atol=1e-5, rtol=1e-4)


def test_text_encoder_lora_changes_the_clip_output(tmp_path: Path) -> None:
    model = fresh()
    before = clip_output(model)
    factors = {k: v for k, v in linear_factors(model).items() if k[0] == "text_encoder"}
    lora = load_lora(write(tmp_path / "te.safetensors", kohya_state(factors)))
    assert {m.component for m in lora.modules.values()} == {"text_encoder"}

    applied = apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
    after = clip_output(model)
    assert (after - before).abs().max() > 1e-3
    applied.restore()
    assert torch.equal(clip_output(model), before)


# -- the patcher ---------------------------------------------------------------------------


def test_patcher_is_a_noop_for_the_same_set_and_switches_cleanly(tmp_path: Path) -> None:
    model = fresh()
    original = snapshot(model)
    a = load_lora(write(tmp_path / "a.safetensors", kohya_state(linear_factors(model, seed=1))))
    b = load_lora(write(tmp_path / "b.safetensors", kohya_state(linear_factors(model, seed=2))))

    def merged(*loras: tuple[LoraFile, float]) -> dict[str, torch.Tensor]:
        other = fresh()
        apply_loras(other.unet, other.text_encoder, list(loras))
        return snapshot(other)

    def assert_state(expected: dict[str, torch.Tensor]) -> None:
        now = snapshot(model)
        assert all(torch.equal(v, now[k]) for k, v in expected.items())

    patcher = LoraPatcher(model.unet, model.text_encoder)
    first = patcher.set([(a, 0.8)])
    assert isinstance(first, AppliedLoras)
    assert_state(merged((a, 0.8)))
    # The same files and weights again: nothing happens (no second merge on top).
    assert patcher.set([(a, 0.8)]) is first
    assert_state(merged((a, 0.8)))
    # The same file loaded again is the same file.
    assert patcher.set([(load_lora(a.path), 0.8)]) is first

    patcher.set([(a, 0.8), (b, 0.5)])
    assert_state(merged((a, 0.8), (b, 0.5)))
    patcher.set([(b, 1.0)])
    assert_state(merged((b, 1.0)))
    assert first.restored

    # A changed file (new mtime) is applied again even under the same name and weight.
    os.utime(b.path, ns=(b.mtime_ns + 10**9, b.mtime_ns + 10**9))
    second = patcher.applied
    assert patcher.set([(load_lora(b.path), 1.0)]) is not second

    patcher.clear()
    assert patcher.applied is None
    assert_state(original)
    assert patcher.set([]) is None
    assert_state(original)


def test_patcher_keeps_the_model_unchanged_when_a_file_does_not_fit(tmp_path: Path) -> None:
    model = fresh()
    original = snapshot(model)
    good = load_lora(write(tmp_path / "good.safetensors", kohya_state(linear_factors(model))))
    bad = load_lora(write(tmp_path / "sdxl_unet.safetensors", sgm_named_state()))
    patcher = LoraPatcher(model.unet, model.text_encoder)
    patcher.set([(good, 1.0)])
    with pytest.raises(LoraError, match="sdxl_unet"):
        patcher.set([(good, 1.0), (bad, 1.0)])
    assert patcher.applied is None
    assert changed_keys(model, original) == set()


# -- files that cannot be used -------------------------------------------------------------


def sgm_named_state() -> dict[str, torch.Tensor]:
    """A kohya SDXL UNet LoRA: SDXL's modules keep the original (SGM) names, 2048-wide context."""
    f = make_factors((640, 2048), 4, 0)
    stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    return {f"{stem}.lora_down.weight": f.down, f"{stem}.lora_up.weight": f.up}


def test_files_made_for_other_models_are_refused_naming_the_file(tmp_path: Path) -> None:
    model = fresh()
    sdxl = kohya_state(linear_factors(model), te_prefix="lora_te1_")
    sdxl["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.ones(
        4, 1280
    )
    sdxl["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = torch.ones(
        1280, 4
    )
    path = write(tmp_path / "sdxl_style.safetensors", sdxl)
    with pytest.raises(LoraError, match=r"sdxl_style\.safetensors.*SDXL"):
        load_lora(path)

    # SDXL UNet modules: the file loads (it is a LoRA) but nothing of it fits this model.
    lora = load_lora(write(tmp_path / "xl_unet.safetensors", sgm_named_state()))
    before = snapshot(model)
    with pytest.raises(LoraError, match=r"xl_unet\.safetensors.*1 not in the model.*SDXL\?"):
        apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
    assert changed_keys(model, before) == set()

    # Right names, wrong shapes (SDXL's attn2.to_k reads 2048-wide text).
    f = make_factors((32, 2048), 4, 0)
    stem = f"lora_unet_{ATTN.replace('attn1', 'attn2').replace('.', '_')}_to_k"
    state = {f"{stem}.lora_down.weight": f.down, f"{stem}.lora_up.weight": f.up}
    lora = load_lora(write(tmp_path / "wide.safetensors", state))
    with pytest.raises(LoraError, match=r"wide\.safetensors.*1 with other shapes.*SDXL\?"):
        apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])


def test_modules_the_model_lacks_are_skipped_and_reported(tmp_path: Path) -> None:
    model = fresh()
    state = kohya_state(linear_factors(model))
    state.update(sgm_named_state())
    lora = load_lora(write(tmp_path / "mixed.safetensors", state))
    applied = apply_loras(model.unet, model.text_encoder, [(lora, 1.0)])
    assert applied.weights_changed == len(lora.modules) - 1
    assert applied.unmatched == {
        "mixed": ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"]
    }


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"weight": torch.ones(3), "bias": torch.ones(3)}, r"not a LoRA: none of its 2 tensors"),
        ({"model.diffusion_model.out.2.weight": torch.ones(1)}, "full Stable Diffusion checkpoint"),
        ({"emb_params": torch.ones(1, 768)}, "textual-inversion embedding"),
        ({"lora_unet_x.hada_w1_a": torch.ones(2, 2)}, "LyCORIS LoHa"),
        (
            {
                "lora_unet_x.lora_down.weight": torch.ones(2, 4),
                "lora_unet_x.dora_scale": torch.ones(1),
            },
            "DoRA",
        ),
        ({"lora_unet_x.lora_down.weight": torch.ones(2, 4)}, r"lora_unet_x has no up factor"),
        (
            {
                "lora_unet_x.lora_down.weight": torch.ones(2, 4),
                "lora_unet_x.lora_up.weight": torch.ones(4, 3),
            },
            "do not fit together",
        ),
    ],
)
def test_unusable_files_raise_lora_error_naming_the_file(
    tmp_path: Path, state: dict, expected: str
) -> None:
    path = write(tmp_path / "some_file.safetensors", state)
    with pytest.raises(LoraError, match=expected) as info:
        load_lora(path)
    assert str(path) in str(info.value)


def test_damaged_and_empty_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(LoraError, match=r"garbage\.safetensors.*not a readable safetensors"):
        load_lora(garbage)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(LoraError, match=r"notes\.pt.*not a LoRA file"):
        load_lora(text)
    empty = tmp_path / "empty.safetensors"
    empty.touch()
    with pytest.raises(LoraError, match=r"empty\.safetensors.*empty"):
        load_lora(empty)


@dataclass
class Payload:  # a custom class: unpickling it needs an arbitrary global
    value: int


def test_pickles_load_only_through_weights_only(tmp_path: Path) -> None:
    model = fresh()
    state = kohya_state(linear_factors(model))
    safe = tmp_path / "plain.pt"
    torch.save(state, safe)
    assert len(load_lora(safe).modules) == len(state) // 2

    unsafe = tmp_path / "evil.pt"
    torch.save({**state, "extra": Payload(1)}, unsafe)
    with pytest.raises(LoraError, match=r"evil\.pt.*refused.*unsafe unpickling"):
        load_lora(unsafe)
    library = LoraLibrary([tmp_path])
    with pytest.raises(LoraError, match="unsafe"):
        library.get("evil")
    assert "evil" in library.errors()


# -- hashes --------------------------------------------------------------------------------


def handmade_safetensors(path: Path, tensors: dict[str, list[float]], metadata: dict) -> Path:
    """A .safetensors file written byte by byte (float32, 2 x n), not by the library."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    body = b""
    for key, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[key] = {
            "dtype": "F32",
            "shape": [2, len(values) // 2],
            "data_offsets": [len(body), len(body) + len(raw)],
        }
        body += raw
    head = json.dumps(header).encode("utf-8")
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + body)
    return path


def addnet_shorthash(path: Path) -> str:
    """kohya's / A1111's "addnet" hash, computed here on its own: the sha256 of the bytes after
    the 8-byte length and the header it gives, first 12 hex digits."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + length :]).hexdigest()[:12]


def test_lora_hashes_value_is_a1111s(tmp_path: Path) -> None:
    model = fresh()
    a = write(tmp_path / "fr3nch.safetensors", kohya_state(linear_factors(model, seed=1)))
    b = write(tmp_path / "style, v2.safetensors", kohya_state(linear_factors(model, seed=2)))
    la, lb = load_lora(a), load_lora(b)
    assert la.shorthash == addnet_shorthash(a) and len(la.shorthash) == 12
    assert la.shorthash != hashlib.sha256(a.read_bytes()).hexdigest()[:12]  # not the file's
    assert la.shorthash != lb.shorthash
    value = lora_hashes_infotext([la, lb, la])
    assert value == f"fr3nch: {la.shorthash}, style v2: {lb.shorthash}"


def test_lora_hash_of_handmade_files_with_and_without_sshs_model_hash(tmp_path: Path) -> None:
    stem = "lora_unet_down_blocks_0_attentions_0_proj_in"
    tensors = {f"{stem}.lora_down.weight": [0.5] * 4, f"{stem}.lora_up.weight": [0.25] * 4}
    # Without sshs_model_hash: the addnet hash, which metadata edits leave unchanged.
    plain = handmade_safetensors(tmp_path / "plain.safetensors", tensors, {"ss_output_name": "x"})
    renamed = handmade_safetensors(
        tmp_path / "renamed.safetensors", tensors, {"ss_output_name": "a much longer name"}
    )
    assert plain.read_bytes() != renamed.read_bytes()
    expected = addnet_shorthash(plain)
    # the bytes after the header are the two tensors' data, in the order written
    assert expected == hashlib.sha256(struct.pack("<8f", *[0.5] * 4, *[0.25] * 4)).hexdigest()[:12]
    assert load_lora(plain).shorthash == expected == load_lora(renamed).shorthash
    assert hashlib.sha256(plain.read_bytes()).hexdigest()[:12] != expected

    # With sshs_model_hash (kohya writes the addnet hash there): A1111 takes it as it is.
    given = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
    metadata = {"sshs_model_hash": given, "sshs_legacy_hash": "12345678"}
    tagged = handmade_safetensors(tmp_path / "tagged.safetensors", tensors, metadata)
    lora = load_lora(tagged)
    assert lora.a1111_hash == given and lora.shorthash == given[:12]
    assert lora_hashes_infotext([lora]) == f"tagged: {given[:12]}"

    # A pickled LoRA has no header: A1111 uses the whole file's sha256.
    pt = tmp_path / "old.pt"
    torch.save({k: torch.tensor(v).reshape(2, -1) for k, v in tensors.items()}, pt)
    assert load_lora(pt).shorthash == hashlib.sha256(pt.read_bytes()).hexdigest()[:12]


def test_lora_hashes_are_cached_like_model_hashes(tmp_path: Path, monkeypatch) -> None:
    from charstudio.engine import loras as loras_module

    cache = tmp_path / "hashes.json"
    path = write(tmp_path / "x.safetensors", kohya_state(linear_factors(fresh(), seed=1)))
    calls: list[int] = []
    real = loras_module.addnet_hash

    def counting(data: bytes) -> str:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(loras_module, "addnet_hash", counting)
    first = load_lora(path, hash_cache_file=cache)
    again = LoraLibrary([tmp_path], hash_cache_file=cache).get("x")
    assert first.shorthash == again.shorthash == addnet_shorthash(path) and len(calls) == 1
    entry = next(iter(json.loads(cache.read_text())["entries"].values()))
    assert entry["addnet"] == first.a1111_hash and entry["size"] == path.stat().st_size

    # A changed file is hashed again.
    stat = path.stat()
    write(path, kohya_state(linear_factors(fresh(), seed=2)))
    os.utime(path, ns=(stat.st_mtime_ns + 10**9, stat.st_mtime_ns + 10**9))
    changed = load_lora(path, hash_cache_file=cache)
    assert len(calls) == 2 and changed.shorthash == addnet_shorthash(path) != first.shorthash


# -- the library ---------------------------------------------------------------------------


def test_library_finds_rescans_and_caches(tmp_path: Path) -> None:
    model = fresh()
    user, project = tmp_path / "user", tmp_path / "project"
    user.mkdir()
    library = LoraLibrary([project, user])
    with pytest.raises(KeyError, match=r"no LoRA named 'MyChar'.*user"):
        library.get("MyChar")
    assert library.missing(["MyChar", "other", "MyChar"]) == ["MyChar", "other"]

    # A file that appears is found on the next query.
    path = write(user / "sub" / "MyChar.safetensors", kohya_state(linear_factors(model, seed=1)))
    lora = library.get("MyChar")
    assert lora.path == path and lora.name == "MyChar"
    assert library.get("mychar") is lora  # case-insensitive, and cached
    assert library.missing(["mychar", "other"]) == ["other"]

    # The project's folder comes first, and a .safetensors wins over a .pt of the same stem.
    write(project / "MyChar.safetensors", kohya_state(linear_factors(model, seed=2)))
    torch.save(kohya_state(linear_factors(model, seed=3)), project / "MyChar.pt")
    assert library.paths()["MyChar"] == project / "MyChar.safetensors"
    changed = library.get("MyChar")
    assert changed.path == project / "MyChar.safetensors" and changed.a1111_hash != lora.a1111_hash

    # Rewriting a file invalidates the cache.
    target = project / "MyChar.safetensors"
    stat = target.stat()
    write(target, kohya_state(linear_factors(model, seed=4)))
    os.utime(target, ns=(stat.st_mtime_ns + 10**9, stat.st_mtime_ns + 10**9))
    assert library.get("MyChar").a1111_hash != changed.a1111_hash

    # Two stems differing only in case: no guess.
    write(user / "Twin.safetensors", kohya_state(linear_factors(model)))
    write(user / "twin.safetensors", kohya_state(linear_factors(model)))
    assert library.resolve("TWIN") is None
    assert library.resolve("Twin") == "Twin"


def test_library_reports_unusable_files_from_the_header(tmp_path: Path) -> None:
    model = fresh()
    write(tmp_path / "good.safetensors", kohya_state(linear_factors(model)))
    write(tmp_path / "not_lora.safetensors", {"weight": torch.ones(2)})
    write(tmp_path / "xl.safetensors", {"lora_te2_a.lora_down.weight": torch.ones(1, 2)})
    (tmp_path / "partial.safetensors").write_bytes(b"\x00\x10")
    library = LoraLibrary([tmp_path])
    errors = library.errors()
    assert set(errors) == {"not_lora", "xl", "partial"}
    assert "SDXL" in errors["xl"] and str(tmp_path / "xl.safetensors") in errors["xl"]
    assert library.missing(["good", "xl", "nothing"]) == ["xl", "nothing"]
    with pytest.raises(LoraError, match="not a LoRA"):
        library.get("not_lora")


def test_library_for_prompt(tmp_path: Path) -> None:
    model = fresh()
    write(tmp_path / "char.safetensors", kohya_state(linear_factors(model)))
    library = LoraLibrary([tmp_path])
    loras = library.for_prompt("photo of <lora:char:0.6>, <hypernet:h:1> <lora:char:1:0.2>")
    assert [(lora.name, weight) for lora, weight in loras] == [("char", 0.6), ("char", (1.0, 0.2))]
    with pytest.raises(KeyError):
        library.for_prompt("<lora:nobody:1>")


# -- prompts -------------------------------------------------------------------------------


def test_loras_in_prompt_follows_a1111() -> None:
    prompt = (
        "a photo <lora:fr3nch:0.8>, <LoRA:Plain>, <lyco:locon_style:-0.5> <hypernet:h:0.3>"
        " <lora:two:0.7:0.2> <lora:named:te=0.1:unet=0.9> <lora:mixed:0.4:unet=1> <lora:dyn:1:1:16>"
    )
    assert loras_in_prompt(prompt) == [
        ("fr3nch", 0.8),
        ("Plain", 1.0),
        ("locon_style", -0.5),
        ("two", (0.7, 0.2)),
        ("named", (0.1, 0.9)),
        ("mixed", (0.4, 1.0)),
        ("dyn", 1.0),
    ]
    assert loras_in_prompt("no tags here") == []
    with pytest.raises(ValueError, match=r"<lora:bad:0,8>.*'0,8' is not a number"):
        loras_in_prompt("<lora:bad:0,8>")
    assert te_unet_weights(0.5) == (0.5, 0.5)
    assert te_unet_weights((0.1, 0.9)) == (0.1, 0.9)


def test_importing_the_module_does_not_import_torch() -> None:
    code = (
        "import sys, charstudio.engine.loras\n"
        "print(any(m in sys.modules for m in ('torch', 'safetensors.torch')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"
