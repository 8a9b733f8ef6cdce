"""Duplicates (exact and MinHash near-duplicates) and length outliers from the profile's arrays."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

BANDS, ROWS = 8, 4  # 8 bands of 4 MinHash rows: candidate pairs from Jaccard ~0.6 up
EXAMPLES = 10


class Duplicates(BaseModel):
    exact: int  # records identical (after normalisation) to an earlier record
    near: int  # records whose estimated Jaccard similarity to an earlier record >= threshold
    threshold: float
    exact_examples: list[list[int]]  # [record, earlier record], 1-based record numbers
    near_examples: list[list[int]]


class Outliers(BaseModel):
    count: int
    method: str
    lower_fence: float
    upper_fence: float
    q1: float
    q3: float
    mean: float
    std: float
    examples: list[int]  # 1-based record numbers


def find_duplicates(exact_hashes: np.ndarray, signatures: np.ndarray, threshold: float = 0.8) -> Duplicates:
    n = len(exact_hashes)
    order = np.argsort(exact_hashes, kind="stable")
    sorted_h = exact_hashes[order]
    repeat = np.r_[False, sorted_h[1:] == sorted_h[:-1]]
    first_of = order[np.maximum.accumulate(np.where(~repeat, np.arange(n), 0))] if n else order
    exact_dup = np.zeros(n, bool)
    exact_dup[order[repeat]] = True
    exact_pairs = [[int(i) + 1, int(first_of[k]) + 1] for k, i in enumerate(order) if repeat[k]][:EXAMPLES]

    empty = (signatures == np.iinfo(np.uint32).max).all(axis=1) if len(signatures) else np.zeros(0, bool)
    candidates: list[np.ndarray] = []
    for band in range(BANDS):
        cols = signatures[:, band * ROWS:(band + 1) * ROWS].astype(np.uint64)
        keys = np.zeros(n, np.uint64)
        for j in range(ROWS):
            keys = keys * np.uint64(0x100000001B3) ^ cols[:, j]
        border = np.argsort(keys, kind="stable")
        k_sorted = keys[border]
        same = np.r_[False, k_sorted[1:] == k_sorted[:-1]]
        group_first = border[np.maximum.accumulate(np.where(~same, np.arange(n), 0))] if n else border
        candidates.append(np.stack([group_first[same], border[same]], axis=1))
    pairs = np.unique(np.concatenate(candidates), axis=0) if candidates and n else np.empty((0, 2), np.int64)
    if len(pairs):
        a, b = pairs[:, 0], pairs[:, 1]
        keep = (~exact_dup[b]) & (~empty[b]) & (exact_hashes[a] != exact_hashes[b])
        a, b = a[keep], b[keep]
        similar = (signatures[a] == signatures[b]).mean(axis=1) >= threshold
        a, b = a[similar], b[similar]
        near_records, first = np.unique(b, return_index=True)
        near_pairs = [[int(b[i]) + 1, int(a[i]) + 1] for i in first[:EXAMPLES]]
    else:
        near_records, near_pairs = np.empty(0), []
    return Duplicates(exact=int(exact_dup.sum()), near=int(len(near_records)), threshold=threshold,
                      exact_examples=exact_pairs, near_examples=near_pairs)


def find_outliers(lengths: np.ndarray, k: float = 3.0) -> Outliers:
    """Records whose text length lies beyond Tukey's far-out fences (Q1 - k*IQR, Q3 + k*IQR)."""
    if not len(lengths):
        return Outliers(count=0, method=f"iqr(k={k})", lower_fence=0, upper_fence=0, q1=0, q3=0, mean=0, std=0,
                        examples=[])
    q1, q3 = np.percentile(lengths, [25, 75])
    iqr = q3 - q1
    low, high = q1 - k * iqr, q3 + k * iqr
    outside = np.flatnonzero((lengths < low) | (lengths > high))
    return Outliers(count=int(len(outside)), method=f"iqr(k={k}) on record text length", lower_fence=float(low),
                    upper_fence=float(high), q1=float(q1), q3=float(q3), mean=float(lengths.mean()),
                    std=float(lengths.std()), examples=[int(i) + 1 for i in outside[:EXAMPLES]])
