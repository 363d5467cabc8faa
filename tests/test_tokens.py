"""CLIP tokenizer (checked against HF transformers) and A1111's 75-token chunk counter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from charstudio.prompts import (
    ClipTokenizer,
    EmbeddingSlot,
    count_prompt_tokens,
    format_prompt_report,
    get_clip_tokenizer,
    prompt_report,
)
from charstudio.prompts.clip_tokenizer import read_merges

A, COMMA = 320, 267  # "a</w>" and ",</w>"


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return get_clip_tokenizer()


def words(n: int, word: str = "a") -> str:
    """A prompt of ``n`` one-token words."""
    return " ".join([word] * n)


# --- tokenizer -------------------------------------------------------------------------------


def test_vocabulary_layout(tok: ClipTokenizer) -> None:
    assert tok.vocab_size == 49408
    assert (tok.bos_id, tok.eos_id) == (49406, 49407)
    assert tok.token_to_id("<|startoftext|>") == 49406
    assert tok.token_to_id("!") == 0  # the byte tokens come first, printable ones in order
    assert tok.token_to_id("!</w>") == 256
    assert tok.token_to_id("a</w>") == A
    assert tok.token_to_id("not a token") is None
    assert tok.id_to_token(A) == "a</w>"


@pytest.mark.parametrize(
    ("text", "ids"), [("a", [320]), ("photo", [1125]), (",", [267]), ("woman", [2308])]
)
def test_known_ids(tok: ClipTokenizer, text: str, ids: list[int]) -> None:
    assert tok.encode(text) == ids


def test_encode_has_no_bos_eos_and_decodes(tok: ClipTokenizer) -> None:
    ids = tok.encode("A photo of a woman, (masterpiece:1.2)")
    assert ids[0] == A and tok.eos_id not in ids
    assert tok.decode(ids) == "a photo of a woman , ( masterpiece : 1 . 2 )"
    assert tok.decode(tok.encode("café 日本 😀")) == "café 日本 😀"
    assert (
        tok.decode([tok.bos_id, *tok.encode("hi"), tok.eos_id]) == "<|startoftext|>hi <|endoftext|>"
    )


def test_normalisation(tok: ClipTokenizer) -> None:
    assert tok.normalize("  Hello \n\t WORLD  ") == "hello world"
    assert tok.normalize("&amp;amp; &lt;3") == "& <3"
    assert tok.normalize("“curly” ﬁne") == '"curly" fine'  # ftfy
    assert tok.encode("Photo") == tok.encode("photo") == tok.encode("  photo  ")


def test_special_tokens_in_text_are_single_tokens(tok: ClipTokenizer) -> None:
    assert tok.encode("<|startoftext|>a<|endoftext|>") == [49406, A, 49407]


def test_a_long_tag_prompt_fits_one_chunk(tok: ClipTokenizer) -> None:
    prompt = (
        "masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile, blue eyes, "
        "(detailed face:1.2), standing, outdoors, cherry blossoms, wind, bokeh, soft lighting, "
        "from side, upper body, white dress, hair ribbon, falling petals, spring, day"
    )
    assert 60 <= len(tok.encode(prompt)) <= 75
    assert tok.encode(prompt) == tok.encode(prompt)  # the BPE cache changes nothing


def test_a_fresh_tokenizer_builds_the_whole_vocabulary() -> None:
    fresh = ClipTokenizer()
    assert fresh.vocab_size == 49408
    assert fresh.encode("photo") == get_clip_tokenizer().encode("photo")


def test_get_clip_tokenizer_is_a_singleton() -> None:
    assert get_clip_tokenizer() is get_clip_tokenizer()


def test_importing_prompts_stays_light() -> None:
    code = (
        "import sys, charstudio.prompts as p; p.count_prompt_tokens('a (b:1.2) BREAK c'); "
        "heavy = {'torch', 'transformers', 'PySide6'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Prompts for the HF comparison: A1111 syntax, unicode, numbers, punctuation, emoji, long text.
HF_PROMPTS = [
    "a photo of a woman",
    "masterpiece, best quality, (detailed face:1.2), [blurry], ((sharp focus)), 8k uhd",
    "1girl, solo, long hair, looking at viewer, smile, open mouth, bangs, blue eyes, 3.14159",
    "(worst quality, low quality:1.4), lowres, bad anatomy, bad hands, text, error, jpeg artifacts",
    "embedding:mychar_v2, <lora:add_detail:0.8>, score_9, score_8_up, rating_safe",
    "an astronaut riding a horse on mars, artstation, by greg rutkowski and alphonse mucha",
    "don't stop, it's, we're, they've, I'm, you'll, she'd, DON'T SHOUT",
    "café naïve façade Ångström Straße ÉCOLE crème brûlée",
    "日本語のテスト, 漂亮的女孩, 한국어 문장, русский текст, ελληνικά, עברית, العربية",
    "emoji 😀😃😄 🐱‍👤 👩‍👩‍👧 🇫🇷 ❤️ ✨✨✨",
    "numbers 0123456789 1,000,000 12.5% $99.99 #1 @user 2024-01-01 12:30",
    "punctuation!!! ??? ... --- ___ *** ~~~ ||| /// \\\\ {} <> ^^ `` '' \"\"",
    "MiXeD CaSe WoRdS and UPPERCASE and lowercase",
    "tabs\tand\nnewlines\r\nand   multiple    spaces",
    "hyphen-ated words, under_scored_words, camelCaseWords, snake_case_2",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "<|startoftext|>special tokens<|endoftext|> in text",
    " ".join(f"tag{i}" for i in range(120)),
    ", ".join(["highly detailed portrait of a cyberpunk samurai in neon rain"] * 8),
]

# Text that ftfy / HTML unescaping changes: HF's tokenizer (transformers 5) only NFC-normalises,
# so for these we compare against HF on our normalised text.
FTFY_PROMPTS = [
    "“smart quotes” and ‘apostrophes’ don’t",
    "ﬁne ligatures ﬂow, ＦＵＬＬ ＷＩＤＴＨ",
    "mojibake cafÃ© and Ã©tÃ©",
    "html &amp; entities &lt;3 &quot;quoted&quot; &amp;amp;",
    "control\x00chars\x1b[31m here",
]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory, tok: ClipTokenizer) -> Any:
    transformers = pytest.importorskip("transformers")
    folder: Path = tmp_path_factory.mktemp("hf_clip")
    vocab = {tok.id_to_token(i): i for i in range(tok.vocab_size)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = "".join(f"{first} {second}\n" for first, second in read_merges())
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(str(folder))


def test_hf_known_ids(hf_tokenizer: Any) -> None:
    for text, ids in [("a", [320]), ("photo", [1125]), (",", [267]), ("woman", [2308])]:
        assert hf_tokenizer.encode(text, add_special_tokens=False) == ids


@pytest.mark.parametrize("prompt", HF_PROMPTS)
def test_matches_hf_clip_tokenizer(tok: ClipTokenizer, hf_tokenizer: Any, prompt: str) -> None:
    assert tok.encode(prompt) == hf_tokenizer.encode(prompt, add_special_tokens=False)


@pytest.mark.parametrize("prompt", FTFY_PROMPTS)
def test_matches_hf_after_normalisation(tok: ClipTokenizer, hf_tokenizer: Any, prompt: str) -> None:
    expected = hf_tokenizer.encode(tok.normalize(prompt), add_special_tokens=False)
    assert tok.encode(prompt) == expected


def test_matches_hf_on_random_unicode(tok: ClipTokenizer, hf_tokenizer: Any) -> None:
    import random

    rng = random.Random(1234)
    blocks = [
        (0x20, 0x7F),
        (0xA0, 0x250),
        (0x370, 0x500),
        (0x3040, 0x30FF),
        (0x4E00, 0x4F00),
        (0xAC00, 0xAC80),
        (0x1F300, 0x1F650),
        (0x600, 0x700),
        (0x900, 0x980),
    ]
    for _ in range(500):
        text = "".join(chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(1, 40)))
        expected = hf_tokenizer.encode(tok.normalize(text), add_special_tokens=False)
        assert tok.encode(text) == expected, text


# --- A1111 chunking and the counter ----------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "chunk_sizes", "counter"),
    [
        (1, [1], "1/75"),
        (74, [74], "74/75"),
        (75, [75], "75/75"),
        (76, [75, 1], "76/150"),
        (150, [75, 75], "150/150"),
        (151, [75, 75, 1], "151/225"),
        (200, [75, 75, 50], "200/225"),
    ],
)
def test_chunk_boundaries(n: int, chunk_sizes: list[int], counter: str) -> None:
    result = count_prompt_tokens(words(n))
    assert [len(c) for c in result.chunks] == chunk_sizes
    assert result.token_count == n
    assert result.counter == counter
    assert all(c == [A] * len(c) for c in result.chunks)


def test_empty_prompt_is_one_empty_chunk() -> None:
    result = count_prompt_tokens("")
    assert result.chunks == [[]]
    assert (result.token_count, result.limit, result.counter) == (0, 75, "0/75")


def test_weights_follow_the_tokens() -> None:
    result = count_prompt_tokens("a (a:1.5) [a]")
    assert result.chunks == [[A, A, A]]
    assert result.weights == [[1.0, 1.5, 1 / 1.1]]


def test_comma_near_the_end_moves_the_tail_to_the_next_chunk() -> None:
    # 70 words, a comma at index 70, then 10 words: the chunk fills at 75 with the comma 5 back,
    # so it is cut after the comma and the 4 words after it start chunk 2.
    result = count_prompt_tokens(words(70) + ", " + words(10))
    assert [len(c) for c in result.chunks] == [71, 10]
    assert result.chunks[0][-1] == COMMA
    assert result.token_count == 81
    assert result.counter == "81/150"
    assert result.a1111_token_count == 85  # A1111 counts the padded chunk as 75


@pytest.mark.parametrize(
    ("before_comma", "chunk_sizes"),
    [
        (55, [56, 29]),  # comma at index 55: 20 back from the end of the chunk, moves
        (54, [75, 10]),  # comma at index 54: 21 back, too far, plain cut at 75
        (10, [75, 10]),
        (74, [75, 10]),  # comma is the 75th token: nothing to move
    ],
)
def test_comma_backtrack_limit(before_comma: int, chunk_sizes: list[int]) -> None:
    prompt = words(before_comma) + ", " + words(84 - before_comma)
    result = count_prompt_tokens(prompt)
    assert [len(c) for c in result.chunks] == chunk_sizes
    assert result.token_count == 85


def test_comma_backtrack_can_be_disabled() -> None:
    result = count_prompt_tokens(words(70) + ", " + words(10), comma_backtrack=0)
    assert [len(c) for c in result.chunks] == [75, 6]


def test_comma_as_the_76th_token_starts_the_next_chunk() -> None:
    result = count_prompt_tokens(words(75) + ", a")
    assert result.chunks == [[A] * 75, [COMMA, A]]


def test_backtrack_carries_weights() -> None:
    result = count_prompt_tokens(words(70) + ", (" + words(10) + ":1.3)")
    assert result.weights[1] == [1.3] * 10
    assert result.weights[0] == [1.0] * 71


def test_break_starts_a_new_chunk() -> None:
    result = count_prompt_tokens("a BREAK a")
    assert result.chunks == [[A], [A]]
    assert result.counter == "2/150"
    assert result.a1111_token_count == 76


def test_break_edge_cases_follow_a1111() -> None:
    # A leading BREAK closes the empty first chunk: A1111 encodes an all-padding chunk.
    assert count_prompt_tokens("BREAK a").chunks == [[], [A]]
    # A trailing BREAK adds no chunk after it.
    trailing = count_prompt_tokens("a BREAK")
    assert trailing.chunks == [[A]]
    assert trailing.counter == "1/75"
    assert count_prompt_tokens("a BREAK BREAK a").chunks == [[A], [], [A]]
    # BREAK inside brackets still breaks.
    assert count_prompt_tokens("(a BREAK a)").weights == [[1.1], [1.1]]


def test_break_after_a_full_chunk() -> None:
    result = count_prompt_tokens(words(75) + " BREAK a")
    assert [len(c) for c in result.chunks] == [75, 1]
    result = count_prompt_tokens(words(80) + " BREAK a")
    assert [len(c) for c in result.chunks] == [75, 5, 1]
    assert result.counter == "81/225"


def test_embeddings_count_as_their_vectors(tok: ClipTokenizer) -> None:
    prompt = "photo of mychar, smiling"
    plain = len(tok.encode("photo of , smiling"))
    result = count_prompt_tokens(prompt, embeddings={"mychar": 4})
    assert result.token_count == plain + 4
    assert result.embeddings == [EmbeddingSlot(chunk=0, offset=2, name="mychar", n_vectors=4)]
    assert result.chunks[0][2:6] == [0, 0, 0, 0]
    # Without the mapping the name is ordinary text.
    assert count_prompt_tokens(prompt).token_count == len(tok.encode(prompt))


def test_embedding_names_match_by_tokens(tok: ClipTokenizer) -> None:
    name = "charstudio_girl-v2"
    assert len(tok.encode(name)) > 3  # a multi-token name
    emb = {name: 2, "bad-hands-5": 1}
    result = count_prompt_tokens("a, (CharStudio_Girl-V2:1.2), bad-hands-5, a", embeddings=emb)
    assert result.token_count == 1 + 1 + 2 + 1 + 1 + 1 + 1
    assert [s.name for s in result.embeddings] == [name, "bad-hands-5"]
    assert result.weights[0][2:4] == [1.2, 1.2]


def test_longest_embedding_name_wins() -> None:
    result = count_prompt_tokens("mychar style", embeddings={"mychar": 1, "mychar style": 8})
    assert result.token_count == 8
    assert [s.name for s in result.embeddings] == ["mychar style"]


def test_embedding_is_never_split_across_chunks() -> None:
    result = count_prompt_tokens(words(73) + " mychar a", embeddings={"mychar": 4})
    assert [len(c) for c in result.chunks] == [73, 5]
    assert result.embeddings == [EmbeddingSlot(chunk=1, offset=0, name="mychar", n_vectors=4)]
    assert result.counter == "78/150"


def test_embedding_moved_by_comma_backtrack_leaves_its_slot_behind() -> None:
    # A1111's quirk: the placeholder tokens move to the next chunk, the vectors' slot does not.
    result = count_prompt_tokens(words(70) + ", mychar a a a", embeddings={"mychar": 2})
    assert [len(c) for c in result.chunks] == [71, 5]
    assert result.embeddings == [EmbeddingSlot(chunk=0, offset=71, name="mychar", n_vectors=2)]


def test_prompt_report_is_json_ready() -> None:
    report = prompt_report("an (important) word BREAK mychar", embeddings={"mychar": 3})
    assert json.loads(json.dumps(report)) == report
    assert report == {
        "prompt": "an (important) word BREAK mychar",
        "extra_networks": [],
        "steps": 30,
        "schedule": [
            {
                "first_step": 1,
                "last_step": 30,
                "text": "an (important) word BREAK mychar",
                "token_count": 6,
            }
        ],
        "emphasis": "Original",
        "attention": [
            ["an ", 1.0],
            ["important", 1.1],
            [" word", 1.0],
            ["BREAK", -1.0],
            ["mychar", 1.0],
        ],
        "chunks": [{"tokens": 3}, {"tokens": 3}],
        "token_count": 6,
        "limit": 150,
        "counter": "6/150",
    }


def test_format_prompt_report() -> None:
    text = format_prompt_report(prompt_report("an (important) word BREAK " + words(80)))
    assert text.splitlines() == [
        "Attention:",
        '  1.0000  "an "',
        '  1.1000  "important"',
        '  1.0000  " word"',
        "  ------  BREAK",
        '  1.0000  "' + words(80) + '"',
        "Chunks:",
        "  1: 3/75",
        "  2: 75/75",
        "  3: 5/75",
        "Tokens: 83/225",
    ]
