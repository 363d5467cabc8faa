"""The LoRA export's validator: keys A1111 and ComfyUI map for SD 1.x, the metadata A1111 reads,
finite numbers, factors that fit together and fit the model."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from charstudio.training.lora_metadata import lora_file_bytes  # noqa: E402
from charstudio.training.lora_validate import (  # noqa: E402
    LoraValidationError,
    ModuleTable,
    sd15_table,
    table_for_model,
    validate_lora,
)

from .lora_fixture import kohya_metadata, kohya_tensors  # noqa: E402
from .tiny_sd import diffusers_pipeline, tiny_components, write_diffusers_folder  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="module")
def model():
    return tiny_components(5)


@pytest.fixture(scope="module")
def table(model) -> ModuleTable:
    return ModuleTable.from_models(model.unet, model.text_encoder)


def write(path: Path, tensors, metadata) -> Path:
    path.write_bytes(lora_file_bytes(tensors, metadata, resolution=32))
    return path


def test_sd15_names_come_from_its_structure() -> None:
    table = sd15_table()
    assert table.text_layers == 12
    # Both spellings of an SD 1.5 attention projection, with SD 1.5's shape.
    assert table.unet["down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"] == (320, 768)
    assert table.unet["input_blocks_1_1_transformer_blocks_0_attn2_to_k"] == (320, 768)
    assert table.unet["output_blocks_11_1_proj_out"] == (320, 320, 1, 1)
    assert table.text_encoder["text_model_encoder_layers_11_mlp_fc2"] == (768, 3072)


def test_a_file_diffusers_loads_passes(model, table, tmp_path: Path) -> None:
    path = write(tmp_path / "good.safetensors", kohya_tensors(model, 1), kohya_metadata("good", 1))
    report = validate_lora(path, table=table, expect_name="good")
    assert (report.unet_modules, report.text_modules, report.rank, report.alpha) == (8, 3, 4, 2.0)
    # diffusers reads every one of those keys (its kohya conversion refuses leftovers).
    pipe = diffusers_pipeline(tiny_components(5), tmp_path / "tok")
    pipe.load_lora_weights(str(path), adapter_name="good")
    assert "good" in pipe.get_active_adapters()
    # A tiny model's file has the tiny shapes: against SD 1.5's they are refused.
    with pytest.raises(LoraValidationError, match="shapes do not fit"):
        validate_lora(path)


@pytest.mark.parametrize(
    ("stem", "why"),
    [
        ("lora_unet_conv_in", "outside the UNet's blocks"),  # A1111 cannot map it
        ("lora_te_text_model_encoder_layers_0_layer_norm1", "ComfyUI maps only"),
        ("lora_te_text_model_encoder_layers_12_mlp_fc1", "has 12 layers"),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn3_to_q", "no SD 1.x"),
        ("lora_te2_text_model_encoder_layers_0_mlp_fc1", "not a kohya SD 1.x key"),
    ],
)
def test_an_unmappable_key_is_refused_by_name(model, table, tmp_path, stem, why) -> None:
    tensors = kohya_tensors(model, 1)
    tensors[f"{stem}.lora_down.weight"] = torch.zeros(4, 32)
    tensors[f"{stem}.lora_up.weight"] = torch.zeros(32, 4)
    path = write(tmp_path / "bad.safetensors", tensors, kohya_metadata("bad", 1))
    with pytest.raises(LoraValidationError) as caught:
        validate_lora(path, table=table)
    message = str(caught.value)
    assert str(path) in message and f"{stem}.lora_down.weight" in message and why in message


def test_metadata_a1111_reads_is_required(model, table, tmp_path) -> None:
    tensors = kohya_tensors(model, 1)
    meta = kohya_metadata("x", 1)
    for key in ("ss_output_name", "ss_base_model_version", "ss_v2"):
        del meta[key]
    path = write(tmp_path / "x.safetensors", tensors, meta)
    with pytest.raises(LoraValidationError) as caught:
        validate_lora(path, table=table)
    assert "no ss_output_name" in str(caught.value)
    assert "neither ss_base_model_version nor ss_v2" in str(caught.value)
    # SDXL metadata, a wrong name and a stale hash are each named.
    meta = {**kohya_metadata("x", 1), "ss_base_model_version": "sdxl_base_v1-0"}
    data = bytearray(lora_file_bytes(tensors, meta, resolution=32))
    data[-1] ^= 0xFF  # a changed weight: sshs_model_hash no longer describes it
    with pytest.raises(LoraValidationError) as caught:
        validate_lora(tmp_path / "y.safetensors", data=bytes(data), table=table, expect_name="y")
    text = str(caught.value)
    assert "another model family" in text and "not 'y'" in text and "sshs_model_hash" in text


def test_nan_dim_and_alpha_mismatches_are_refused(model, table, tmp_path) -> None:
    tensors = kohya_tensors(model, 1)
    key = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v.lora_up.weight"
    tensors[key][0, 0] = float("nan")
    meta = {**kohya_metadata("x", 1), "ss_network_dim": "8", "ss_network_alpha": "4"}
    path = write(tmp_path / "x.safetensors", tensors, meta)
    with pytest.raises(LoraValidationError) as caught:
        validate_lora(path, table=table)
    text = str(caught.value)
    assert f"NaN or infinite values: {key}" in text
    assert "ss_network_dim says 8 but the weights have rank 4" in text
    assert "ss_network_alpha says 4" in text


def test_factors_that_do_not_fit_are_refused(model, table, tmp_path) -> None:
    tensors = kohya_tensors(model, 1)
    stem = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    tensors[f"{stem}.lora_up.weight"] = torch.zeros(32, 3)  # rank 3 against down's 4
    path = write(tmp_path / "x.safetensors", tensors, kohya_metadata("x", 1))
    with pytest.raises(LoraValidationError, match=f"{stem}: the factors do not fit"):
        validate_lora(path, table=table)


def test_the_table_follows_the_run_model(model, tmp_path) -> None:
    folder = write_diffusers_folder(tmp_path / "tiny", model)
    tiny = table_for_model(folder)
    assert tiny.text_layers == 2
    assert tiny.unet["down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"] == (32, 32)
    assert table_for_model(None) is sd15_table()
    assert table_for_model(tmp_path / "model.safetensors") is sd15_table()
