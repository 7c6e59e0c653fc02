"""Document-level, seeded split of one source into evaluation and calibration parts.

The two parts never share a document. The split walks the documents in a
seeded order and gives the evaluation part documents until it holds
``eval_fraction`` of the characters; the rest is calibration text.
"""

from __future__ import annotations

import hashlib
import random

EVAL_FRACTION = 0.4


def doc_hash(doc: str) -> str:
    """Content hash of one document (used to detect overlap between sets)."""
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()


def split_documents(docs: list[str], seed: int, eval_fraction: float = EVAL_FRACTION) -> tuple[list[str], list[str]]:
    """(evaluation documents, calibration documents), disjoint, deterministic for ``seed``."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    total = sum(len(d) for d in docs)
    eval_docs: list[str] = []
    calib_docs: list[str] = []
    eval_chars = 0
    for i in order:
        # Always leave at least one document for each side when there are two.
        if (eval_chars < eval_fraction * total and len(eval_docs) < len(docs) - 1) or not eval_docs:
            eval_docs.append(docs[i])
            eval_chars += len(docs[i])
        else:
            calib_docs.append(docs[i])
    return eval_docs, calib_docs


def remove_overlap(calib_docs: list[str], eval_docs: list[str]) -> tuple[list[str], int]:
    """Calibration documents that do not also appear in the evaluation set, and how many were dropped."""
    seen = {doc_hash(d) for d in eval_docs}
    kept = [d for d in calib_docs if doc_hash(d) not in seen]
    return kept, len(calib_docs) - len(kept)
