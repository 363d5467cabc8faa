"""Prompt syntax: A1111 attention parsing, prompt editing/alternation schedules, the CLIP
tokenizer and the 75-token counter.

Importing this package is cheap: the tokenizer's vocabulary (and ftfy/regex) load on first use.
"""

from charstudio.prompts.attention import (
    BREAK_MARKER,
    AttentionRun,
    is_break,
    parse_attention_runs,
    parse_prompt_attention,
)
from charstudio.prompts.clip_tokenizer import ClipTokenizer, get_clip_tokenizer
from charstudio.prompts.extra_networks import ExtraNetwork, split_extra_networks
from charstudio.prompts.schedule import PromptSchedule, ScheduleSpan, prompt_schedule
from charstudio.prompts.token_count import (
    CHUNK_LENGTH,
    DEFAULT_STEPS,
    EmbeddingSlot,
    PromptTokens,
    count_prompt_tokens,
    count_scheduled_tokens,
    format_prompt_report,
    format_schedule,
    prompt_report,
)

__all__ = [
    "BREAK_MARKER",
    "CHUNK_LENGTH",
    "DEFAULT_STEPS",
    "AttentionRun",
    "ClipTokenizer",
    "EmbeddingSlot",
    "ExtraNetwork",
    "PromptSchedule",
    "PromptTokens",
    "ScheduleSpan",
    "count_prompt_tokens",
    "count_scheduled_tokens",
    "format_prompt_report",
    "format_schedule",
    "get_clip_tokenizer",
    "is_break",
    "parse_attention_runs",
    "parse_prompt_attention",
    "prompt_report",
    "prompt_schedule",
    "split_extra_networks",
]
