"""Tokenizer benchmark: training and encoding, ours vs the anchors, in one process.

Training: ~10 MB of English (the Shakespeare corpus twice, the second copy reversed), vocab 8192,
the gpt4 split pattern, against HF `tokenizers` (BpeTrainer) and `rustbpe`.
Targets: default path <= 0.8x HF's time; pure-Python path <= 2x HF's time.
Encoding: the same text with the same ranks, against a `tiktoken.Encoding` built directly;
target >= 0.95x tiktoken's throughput, one document at a time and batched.

    python benchmarks/tokenizer.py            # fetches the Shakespeare corpus on first use
"""

from __future__ import annotations

import tempfile
import time

VOCAB = 8192
REPEATS = 2


def best_times(fns: list, repeats: int, cpu: bool = False):
    """Min time over `repeats` runs of each function, run interleaved (a b, b a, a b, ...) so that load from
    other processes hits all of them alike. Returns [(min seconds, last result), ...]; with
    `cpu=True`, [(min wall seconds, min CPU seconds of this process, last result), ...]."""
    wall = [float("inf")] * len(fns)
    proc = [float("inf")] * len(fns)
    outs: list = [None] * len(fns)
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            t0, c0 = time.perf_counter(), time.process_time()
            outs[i] = fns[i]()
            wall[i] = min(wall[i], time.perf_counter() - t0)
            proc[i] = min(proc[i], time.process_time() - c0)
    if cpu:
        return list(zip(wall, proc, outs))
    return list(zip(wall, outs))


def train_hf(docs: list[str], pattern: str):
    from tokenizers import Regex, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(docs, trainer)
    return tok


def train_rustbpe(docs: list[str], pattern: str):
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(docs, vocab_size=VOCAB - 10, pattern=pattern)  # same number of merges as ours
    return tok


def main() -> None:
    import tiktoken

    from llmlab.data.corpus import load_documents
    from llmlab.tokenizer import PATTERNS, Tokenizer, bpe

    works = load_documents("shakespeare")
    docs = works + [w[::-1] for w in works]
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    pattern = PATTERNS["gpt4"]
    print(
        f"corpus: {len(docs)} documents, {n_bytes / 1e6:.1f} MB; vocab {VOCAB} (ours: 10 of it special tokens)"
    )

    # ---- training
    (t_hf, _), (t_rust, _), (t_ours, ours), (t_py, ours_py), (t_split, counts) = best_times(
        [
            lambda: train_hf(docs, pattern),
            lambda: train_rustbpe(docs, pattern),
            lambda: Tokenizer.train(docs, VOCAB, engine="auto"),
            lambda: Tokenizer.train(docs, VOCAB, engine="python", show_progress=False),
            lambda: bpe.count_chunks(docs, pattern),
        ],
        REPEATS,
    )
    assert ours.merges == ours_py.merges, "rustbpe path and pure-Python path disagree"
    print(
        f"train: HF tokenizers {t_hf:.2f} s | rustbpe {t_rust:.2f} s | llmlab default (rustbpe) {t_ours:.2f} s"
        f" | llmlab pure Python {t_py:.2f} s (regex split + count {t_split:.2f} s, {len(counts)} unique chunks)"
    )
    print(f"ratio train llmlab-default / HF time = {t_ours / t_hf:.2f}  (target <= 0.8)")
    print(f"ratio train llmlab-python  / HF time = {t_py / t_hf:.2f}  (goal <= 2.0)")
    print(f"ratio train llmlab-default / rustbpe time = {t_ours / t_rust:.2f}")

    # ---- encoding: same ranks, same pattern, same special tokens. Both engines are built from the
    # saved file, the way a tokenizer is used after training.
    with tempfile.TemporaryDirectory() as tmp:
        ours.save(f"{tmp}/tok.json")
        ours = Tokenizer.load(f"{tmp}/tok.json")
    enc = tiktoken.Encoding(
        "anchor",
        pat_str=ours.pattern,
        mergeable_ranks=dict(ours.mergeable_ranks),
        special_tokens=dict(ours.special_tokens),
    )
    reps = 6
    (w_tt, c_tt, ids_tt), (w_us, c_us, ids_us) = best_times(
        [lambda: [enc.encode(d) for d in docs], lambda: [ours.encode(d) for d in docs]], reps, cpu=True
    )
    assert ids_tt == ids_us
    (wb_tt, cb_tt, bids_tt), (wb_us, cb_us, bids_us) = best_times(
        [lambda: enc.encode_batch(docs), lambda: ours.encode_batch(docs)], reps, cpu=True
    )
    assert bids_tt == bids_us == ids_us
    n_tokens = sum(map(len, ids_us))
    mb = n_bytes / 1e6
    print(
        f"encode ({n_tokens} tokens, wall clock): one by one tiktoken {mb / w_tt:.2f} MB/s, llmlab "
        f"{mb / w_us:.2f} MB/s | batch tiktoken {mb / wb_tt:.2f} MB/s, llmlab {mb / wb_us:.2f} MB/s"
    )
    print(
        f"ratio encode single llmlab / tiktoken throughput = {w_tt / w_us:.3f} wall, {c_tt / c_us:.3f} CPU time"
        "  (target >= 0.95)"
    )
    print(
        f"ratio encode batch  llmlab / tiktoken throughput = {wb_tt / wb_us:.3f} wall, {cb_tt / cb_us:.3f} CPU time"
        "  (target >= 0.95)"
    )


if __name__ == "__main__":
    main()
