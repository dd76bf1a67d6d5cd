"""Text: captions and transcripts from `txt` members, tokenised per batch.

`TextField(tokenizer)` returns `text` (list of str) and, with a tokenizer, `input_ids` and
`attention_mask` `[B, L]`. The tokenizer is a Hugging Face id or local folder, loaded lazily in
each worker with `trust_remote_code` off unless asked for. Empty captions are skipped
(`empty_caption`), undecodable bytes too (`bad_caption`).
"""
from __future__ import annotations

import os

from .fields import SkipSample, member

# Fast tokenizers spawn threads; in forked data workers that deadlocks or oversubscribes.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TextField:
    extensions = ("txt",)

    def __init__(self, tokenizer: str | None = None, max_length: int = 32, trust_remote_code: bool = False):
        self.tokenizer_name, self.max_length = tokenizer, max_length
        self.trust_remote_code = trust_remote_code
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None and self.tokenizer_name:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def __getstate__(self):
        # Workers load their own tokenizer; do not ship a loaded one through pickling.
        return {**self.__dict__, "_tokenizer": None}

    def decode(self, sample: dict) -> dict:
        raw = member(sample, self.extensions, "caption")
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise SkipSample("bad_caption", sample["__key__"]) from None
        if not text:
            raise SkipSample("empty_caption", sample["__key__"])
        return {"text": text}

    def collate(self, items: list[dict]) -> dict:
        if self.tokenizer is None:
            return {}
        enc = self.tokenizer([it["text"] for it in items], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
