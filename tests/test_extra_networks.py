"""Extra-network tags are taken out of prompts before parsing and counting, as A1111 does."""

from __future__ import annotations

from charstudio.prompts import ExtraNetwork, prompt_report, split_extra_networks


def test_lora_tags_are_split_off_in_order() -> None:
    text, networks = split_extra_networks("photo of fr3nch <lora:fr3nch:0.8>, <hypernet:x:1> hat")
    assert text == "photo of fr3nch ,  hat"  # A1111 leaves the spaces around a tag
    assert networks == [
        ExtraNetwork("lora", "fr3nch", ("0.8",)),
        ExtraNetwork("hypernet", "x", ("1",)),
    ]
    assert networks[0].weight == 0.8


def test_weight_defaults_to_one() -> None:
    _, [network] = split_extra_networks("<lora:style>")
    assert network.weight == 1.0
    _, [bad] = split_extra_networks("<lora:style:strong>")
    assert bad.weight == 1.0


def test_prompt_report_does_not_count_lora_tags() -> None:
    report = prompt_report("a photo <lora:fr3nch:0.8>")
    assert report["token_count"] == 2
    assert report["extra_networks"] == [{"kind": "lora", "name": "fr3nch", "args": ["0.8"]}]
    assert report["attention"] == [["a photo ", 1.0]]
