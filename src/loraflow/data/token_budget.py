"""Token lengths at the clean stage: conversations counted exactly as the format and tokenise stages will
see them, so that the clean stage can reject or record the rows tokenize.max_length cuts."""

from __future__ import annotations


class TokenBudget:
    """Token counts of conversations exactly as the format and tokenise stages will see them (the same
    chat template, system prompt and tokenizer call), and where max_length cuts the last answer.
    `overlong` is what becomes of a longer row (tokenize.overlong): truncate | reject."""

    def __init__(self, tokenizer, system_prompt: str, max_tokens: int, overlong: str = "truncate"):
        self.tokenizer, self.system_prompt, self.max_tokens, self.overlong = (
            tokenizer,
            system_prompt,
            max_tokens,
            overlong,
        )

    def measure(self, conversations: list[list[dict]], batch: int = 512) -> list[tuple[int, int, int]]:
        """[(tokens, prompt tokens, answer characters kept under max_length)] per conversation."""
        from loraflow.data.chatml import render_with_spans, with_system_prompt

        out = []
        for start in range(0, len(conversations), batch):
            chunk = conversations[start : start + batch]
            rendered = [render_with_spans(self.tokenizer, with_system_prompt(m, self.system_prompt)) for m in chunk]
            enc = self.tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
            for messages, (text, spans), offsets in zip(chunk, rendered, enc["offset_mapping"]):
                answer_start = spans[-1][0]
                prompt_tokens = sum(1 for a, _ in offsets if a < answer_start)
                kept = len(messages[-1]["content"])
                if len(offsets) > self.max_tokens:
                    kept = max(0, min(offsets[self.max_tokens - 1][1] - answer_start, kept))
                out.append((len(offsets), prompt_tokens, kept))
        return out
