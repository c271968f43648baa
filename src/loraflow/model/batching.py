"""Batching: length-grouped micro-batches, right-padded rows (collate), packed rows (pack) and the
forward passes of a micro-batch under a token budget."""

from __future__ import annotations

import numpy as np
import torch

Example = tuple[np.ndarray, np.ndarray]


def length_grouped_batches(
    lengths: list[int], batch_size: int, rng: np.random.Generator, group: int = 64
) -> list[list[int]]:
    """Shuffle, sort within windows of `group` batches by length, then shuffle the batches:
    little padding, still random."""
    order = rng.permutation(len(lengths))
    window = batch_size * group
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return [list(map(int, b)) for b in batches]


def round_up(n: int, granule: int) -> int:
    return -(-n // granule) * granule


def collate(examples: list[Example], pad_id: int, device: torch.device, granule: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch (rounded up to a multiple of `granule`).
    `example` numbers each token's conversation (-1 on padding)."""
    width = round_up(max(len(ids) for ids, _ in examples), granule)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    which = torch.full((len(examples), width), -1, dtype=torch.long)
    for row, (i, m) in enumerate(examples):
        ids[row, : len(i)] = torch.from_numpy(i.astype(np.int64))
        mask[row, : len(m)] = torch.from_numpy(m.astype(bool))
        attn[row, : len(i)] = 1
        which[row, : len(i)] = row
    return {
        "input_ids": ids.to(device),
        "labels_mask": mask.to(device),
        "attention_mask": attn.to(device),
        "example": which.to(device),
    }


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """First-fit decreasing: example indices per row, each row's lengths summing to at most
    `max_length` (an example longer than that gets a row of its own). Deterministic."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(max_length - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return rows


def pack(
    examples: list[Example],
    pad_id: int,
    device: torch.device,
    max_length: int,
    rows: list[list[int]] | None = None,
    granule: int = 1,
) -> dict[str, torch.Tensor]:
    """Several conversations per row (rows of at most `max_length` tokens, see pack_rows), no attention
    mask: position ids restart at 0 for every conversation, from which transformers' masking utilities
    (find_packed_sequence_indices) build a block-diagonal causal mask for SDPA / flex attention, or
    varlen boundaries for flash attention, so no token attends across conversations. The first
    token of each conversation is never a target (nothing before it belongs to it). Trailing padding
    is a pseudo-conversation of its own (positions from 0, no targets); rows are as wide as the
    fullest, rounded up to a multiple of `granule` (shape_granule)."""
    lengths = [len(ids) for ids, _ in examples]
    rows = rows if rows is not None else pack_rows(lengths, max_length)
    width = round_up(max(sum(lengths[i] for i in row) for row in rows), granule)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    which = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            ids[r, at : at + n] = torch.from_numpy(examples[i][0].astype(np.int64))
            mask[r, at + 1 : at + n] = torch.from_numpy(examples[i][1][1:].astype(bool))
            pos[r, at : at + n] = torch.arange(n)
            which[r, at : at + n] = i
            at += n
        pos[r, at:] = torch.arange(width - at)
    return {
        "input_ids": ids.to(device),
        "labels_mask": mask.to(device),
        "position_ids": pos.to(device),
        "example": which.to(device),
    }


def forward_batches(
    examples: list[Example],
    pad_id: int,
    device: torch.device,
    packing: bool = False,
    max_length: int = 512,
    tokens_per_forward: int = 0,
    granule: int = 1,
) -> list[dict[str, torch.Tensor]]:
    """One micro-batch as the model inputs of one or more forward passes. Unpacked: right-padded rows
    (collate); packed: conversations packed into rows of at most `max_length` tokens (pack). With
    `tokens_per_forward` > 0 the rows are split into forward passes of at most that many tokens
    (padding included; at least one row each): the gradient is the same sum over the same tokens,
    with activation memory bounded by the budget instead of the micro-batch.

    Packed rows are no wider than the micro-batch's longest conversation (at most `max_length`): SDPA
    with a block-diagonal mask costs width² per row whatever the mask holds, so rows of 512 filled with
    six 90-token chats spent about a fifth of a CPU training step on attention that is masked away
    (rows as wide as the longest: 1.19x tokens/s on the default data on 2 AVX2 cores, padding 0.5 %;
    benchmarks/bench_pack_width.py). Widths are rounded up to a multiple of `granule` (shape_granule)."""
    lengths = [len(ids) for ids, _ in examples]
    width = min(max_length, max(lengths, default=max_length))
    if not tokens_per_forward:
        return [
            pack(examples, pad_id, device, width, granule=granule)
            if packing
            else collate(examples, pad_id, device, granule)
        ]
    rows = (
        pack_rows(lengths, width)
        if packing
        else [[i] for i in sorted(range(len(examples)), key=lambda k: (-lengths[k], k))]
    )

    def fill(row: list[int]) -> int:
        return sum(lengths[i] for i in row)

    rows.sort(key=fill, reverse=True)  # stable: a group's width is its first row's fill
    groups: list[list[list[int]]] = []
    for row in rows:
        if groups and (len(groups[-1]) + 1) * round_up(fill(groups[-1][0]), granule) <= tokens_per_forward:
            groups[-1].append(row)
        else:
            groups.append([row])
    if packing:
        return [pack(examples, pad_id, device, width, rows=group, granule=granule) for group in groups]
    return [collate([examples[row[0]] for row in group], pad_id, device, granule) for group in groups]


def forward_tokens(
    tokens_per_forward: int, packing: bool, batch_size: int, max_length: int, device: torch.device
) -> int:
    """Tokens per forward pass (0 = the whole micro-batch in one pass). `train.tokens_per_forward: 0`
    means auto: on a CPU max_length tokens per pass (one full packed row) - the matmuls are as fast at
    that size and activation memory is a fraction of the micro-batch's; on a GPU the whole
    micro-batch (large matmuls keep it busy)."""
    if tokens_per_forward > 0:
        return max(tokens_per_forward, max_length) if packing else tokens_per_forward
    return max_length if device.type == "cpu" and packing else 0


def pass_bound(per_forward: int, batch_size: int, max_length: int, longest: int | None = None) -> int:
    """The most tokens one forward pass can hold: `per_forward` (forward_tokens; 0 = the whole
    micro-batch), and never more than a micro-batch of the longest rows there are (`longest`, the
    token cache's longest example; None = rows of max_length)."""
    return min(per_forward or batch_size * max_length, batch_size * (longest or max_length))
