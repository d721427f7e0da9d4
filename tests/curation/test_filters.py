"""n-gram normalisation/hashing, dedup and decontamination on crafted cases, quality filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from archer.curation.filters import (
    decontaminate,
    dedup,
    filter_min_tests,
    filter_pass_rate,
    filter_reference_passes,
    num_tests,
)
from archer.data.ngram import NgramIndex, corpus_ngram_hashes, near_duplicate_counts, normalize_text
from archer.data.schema import Problem
from archer.rewards.types import TestReport

BASE = "a train leaves the station at noon traveling sixty miles per hour toward the city"


def _m(pid: str, text: str) -> Problem:
    return Problem(pid, text, "math", answer="1")


def _python_ngrams(text: str, n: int = 9) -> set[tuple[str, ...]]:
    # independent reference: plain tuples of words, no hashing
    w = normalize_text(text).split()
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def test_normalisation():
    assert normalize_text("  Find $x^2$,\tif  X=3.\n") == "find x 2 if x 3"
    assert normalize_text("snake_case-word") == "snake case word"
    assert normalize_text("Ünïcode ÉTÉ") == "ünïcode été"


def test_hash_count_matches_python_ngram_sets():
    texts = [
        BASE,
        "short text here",
        "",
        "one two three four five six seven eight nine",
        BASE + " again " + BASE,
    ]
    hashes, docs = corpus_ngram_hashes(texts)
    for d, t in enumerate(texts):
        assert len(set(hashes[docs == d].tolist())) == len(_python_ngrams(t))
    # no window spans two documents: total windows = sum over docs
    expected = sum(max(len(normalize_text(t).split()) - 8, 1 if normalize_text(t) else 0) for t in texts)
    assert len(hashes) == expected


def test_same_ngram_same_hash_across_documents():
    a, b = "x y z " + BASE, BASE + " q r"
    ha, da = corpus_ngram_hashes([a, b])
    shared = set(ha[da == 0].tolist()) & set(ha[da == 1].tolist())
    assert len(shared) == len(_python_ngrams(a) & _python_ngrams(b)) > 0


def test_decontam_nine_word_overlap_caught_eight_not():
    words = BASE.split()
    eval_set = [_m("eval/0", BASE)]
    nine = "completely different opening " + " ".join(words[2:11]) + " then other stuff follows"
    eight = "completely different opening " + " ".join(words[2:10]) + " then other stuff follows"
    paraphrase = "Q: " + BASE.upper().replace(" ", ", ") + "??"  # same words, new punctuation/case
    train = [
        _m("t/nine", nine),
        _m("t/eight", eight),
        _m("t/para", paraphrase),
        _m("t/clean", "nothing alike"),
    ]
    kept, removed = decontaminate(train, eval_set)
    assert [p.id for p in kept] == ["t/eight", "t/clean"]
    assert {r["id"]: r["matches"] for r in removed} == {"t/nine": "eval/0", "t/para": "eval/0"}


def test_decontam_short_texts_match_whole_normalised_text():
    eval_set = [_m("e", "Compute 2+2."), _m("e2", "x")]
    train = [_m("a", "compute 2 + 2"), _m("b", "compute 2 + 3"), _m("c", "Compute 2+2 please, now")]
    kept, removed = decontaminate(train, eval_set)
    assert [p.id for p in kept] == ["b", "c"] and removed[0]["id"] == "a"


def test_decontam_min_shared_and_max_doc_freq():
    words = BASE.split()
    one_gram = " ".join(words[:9]) + " zz yy"
    _, removed = decontaminate([_m("t", one_gram)], [_m("e", BASE)], min_shared=2)
    assert removed == []
    boiler = "you are an expert python programmer solve the following problem carefully"
    evals = [_m(f"e{i}", f"{boiler} topic{i} alpha beta gamma delta") for i in range(3)]
    train = [_m("t", f"{boiler} totally unrelated training question")]
    assert len(decontaminate(train, evals)[1]) == 1
    assert decontaminate(train, evals, max_doc_freq=2)[1] == []


def test_dedup_exact_and_near_keeps_first():
    words = BASE.split()
    items = [
        _m("p0", BASE),
        _m("p1", BASE.upper() + "!"),  # exact after normalisation
        _m("p2", "prefix words " + " ".join(words[:9])),  # shares one 9-gram with p0
        _m("p3", "other start " + " ".join(words[:8])),  # shares only 8 words with p0/p2
        _m("p4", "Other start: " + " ".join(words[:8])),  # exact duplicate of p3
    ]
    # threshold 0: any shared 9-gram makes a near duplicate (p2 shares 1 of its 3 distinct 9-grams)
    kept, removed = dedup(items, threshold=0.0)
    assert [p.id for p in kept] == ["p0", "p3"]
    assert {r["id"]: (r["reason"].split()[0], r["duplicate_of"]) for r in removed} == {
        "p1": ("exact", "p0"),
        "p2": ("near", "p0"),
        "p4": ("exact", "p3"),
    }
    assert removed[1]["shared_fraction"] == round(1 / 3, 4)
    # the default threshold (0.5) keeps p2 (1/3 shared); exact duplicates are removed at any threshold
    kept, removed = dedup(items)
    assert [p.id for p in kept] == ["p0", "p2", "p3"]
    assert [r["reason"] for r in removed] == ["exact", "exact"]
    assert [p.id for p in dedup(items, threshold=1 / 3)[0]] == ["p0", "p3"]  # boundary: >= threshold drops
    kept_exact, _ = dedup(items, near=False)
    assert [p.id for p in kept_exact] == ["p0", "p2", "p3"]


def test_dedup_threshold_fraction_hand_computed():
    # q has 12 words -> 4 distinct 9-grams; 3 of them occur in base (q = base[1:12] + "zeta") -> 3/4
    base_words = [f"w{i}" for i in range(12)]
    base = _m("base", " ".join(base_words))
    q = _m("q", " ".join(base_words[1:12] + ["zeta"]))
    assert [p.id for p in dedup([base, q], threshold=0.75)[0]] == ["base"]
    assert [p.id for p in dedup([base, q], threshold=0.76)[0]] == ["base", "q"]
    assert [p.id for p in dedup([base, q], threshold=0.5, min_shared=4)[0]] == ["base", "q"]
    with pytest.raises(ValueError, match="threshold"):
        dedup([base], threshold=1.5)


MATH500 = Path("/work/shared/data/math/math500.jsonl")


@pytest.mark.skipif(not MATH500.is_file(), reason="bundled MATH-500 sample not present")
def test_dedup_default_keeps_math500_distinct_problems():
    from archer.data.formats import load_dataset

    problems = load_dataset(MATH500)
    assert len(dedup(problems)[0]) == len(problems) == 500
    assert len(dedup(problems, threshold=0.0)[0]) == 480  # the old any-shared-9-gram rule


def test_near_duplicate_counts_against_bruteforce():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(12)]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(3, 30))) for _ in range(40)]
    counts, example, _ = near_duplicate_counts(texts, n=3)
    for i, t in enumerate(texts):
        mine = _python_ngrams(t, 3)
        earlier = set().union(*[_python_ngrams(u, 3) for u in texts[:i]]) if i else set()
        assert counts[i] == len(mine & earlier)
        if counts[i]:
            assert example[i] < i and mine & _python_ngrams(texts[example[i]], 3)


def test_index_lookup_and_counts():
    idx = NgramIndex.build([BASE, "tiny"])
    assert len(idx) == len(_python_ngrams(BASE)) + 1
    counts, ex = idx.match_counts(["tiny", BASE + " extra words", "nope"])
    assert counts.tolist() == [1, len(_python_ngrams(BASE)), 0] and ex.tolist() == [1, 0, -1]


def _code(pid: str, tests: dict, solution: str | None = None) -> Problem:
    return Problem(pid, "task", "code", tests=tests, meta={"solution": solution} if solution else {})


def test_min_tests_and_num_tests():
    a = _code("a", {"inputs": ["1", "2", "3"], "outputs": ["1", "2", "3"]})
    b = _code("b", {"assert": "def check(c):\n    assert c(1)\n    assert c(2)\ncheck(f)\n"})
    c = _code("c", {"inputs": ["1"], "outputs": ["1"]})
    assert [num_tests(x) for x in (a, b, c)] == [3, 2, 1]
    assert num_tests(_code("l", {"assert": ["assert f(1)", "assert f(2)"]})) == 2
    kept, removed = filter_min_tests([a, b, c, _m("m", "math passes")], 2)
    assert [p.id for p in kept] == ["a", "b", "m"] and removed[0]["id"] == "c"


def test_reference_filter_uses_batch_runner():
    calls = []

    def fake_batch(items, **opts):
        calls.append((items, opts))
        return [
            TestReport(2, 2, ["ok", "ok"]) if "good" in prog else TestReport(1, 2, ["ok", "wrong"])
            for prog, _ in items
        ]

    t = {"inputs": ["1", "2"], "outputs": ["1", "2"]}
    probs = [_code("g", t, "good"), _code("b", t, "bad"), _code("none", t)]
    kept, removed = filter_reference_passes(probs, run_tests_batch=fake_batch, timeout=3.0)
    assert [p.id for p in kept] == ["g", "none"] and removed[0]["verdicts"] == ["ok", "wrong"]
    assert calls[0][1] == {"timeout": 3.0} and len(calls[0][0]) == 2
    kept, _ = filter_reference_passes(probs, require_solution=True, run_tests_batch=fake_batch)
    assert [p.id for p in kept] == ["g"]


def test_reference_filter_real_sandbox_on_shared_mbpp(shared_data):
    pytest.importorskip("archer.rewards.code")
    from archer.data.formats import load_dataset

    probs = load_dataset(shared_data / "code/mbpp_sample.jsonl", limit=2) + load_dataset(
        shared_data / "code/livecodebench_sample.jsonl", limit=1
    )  # LCB sample "solution" is the exit exploit
    kept, removed = filter_reference_passes(probs, timeout=10.0)
    assert [p.id for p in kept] == [p.id for p in probs[:2]]
    assert [r["id"] for r in removed] == [probs[2].id]


def test_pass_rate_band():
    probs = [_m(str(i), f"q{i}") for i in range(4)]
    kept, removed = filter_pass_rate(probs, [0.0, 0.25, 1.0, 0.5], low=0.1, high=0.9)
    assert [p.id for p in kept] == ["1", "3"] and len(removed) == 2
    with pytest.raises(ValueError):
        filter_pass_rate(probs, [0.0], 0, 1)
    with pytest.raises(ValueError):
        filter_pass_rate(probs, [0.0] * 4, 0.8, 0.2)


TRICKY = [
    "Café—naïve_test “quoted” x≤y ½ ΣΑΣ straße 数学 问题 one two three four five six seven eight nine",
    "CAFÉ naïve test quoted x y ½ σας STRASSE 数学 问题 one two three four five six seven eight nine",
    "plain ascii: a_b-c/d\\frac{1}{2} $x^2$ tail words to make this longer than nine words total",
    "",
    "!!! ...",
]


def test_vectorised_word_split_matches_regex_words():
    from archer.data.ngram import hash_corpus, words

    hashes, docs, doc_hash = hash_corpus(TRICKY, n=3)
    for d, t in enumerate(TRICKY):
        assert len(set(hashes[docs == d].tolist())) == len(_python_ngrams(t, 3)), t
    assert doc_hash[3] == 0 and doc_hash[4] == 0
    # equal normalised texts <=> equal whole-text hashes
    a, b = "Hello, World: again", "hello world again"
    _, _, dh = hash_corpus([a, b, "hello world agai"])
    assert words(a) == words(b) and dh[0] == dh[1] != dh[2]


def test_chunking_does_not_change_hashes(monkeypatch):
    import archer.data.ngram as ngram

    texts = [BASE + f" doc {i} " + TRICKY[i % 3] for i in range(30)]
    ref = ngram.hash_corpus(texts)
    monkeypatch.setattr(ngram, "CHUNK_BYTES", 300)
    assert len(ngram._chunks(texts)) > 5
    got = ngram.hash_corpus(texts)
    for x, y in zip(ref, got):
        assert np.array_equal(x, y)


def test_humaneval_loader_gives_prompt_helpers_as_trusted_setup_so_references_pass(shared_data):
    """HumanEval/32, 38 and 50 test through helpers defined in the prompt: the loader passes the prompt as
    the judge's trusted setup, so every canonical solution passes its own tests."""
    from archer.data.formats import load_dataset
    from archer.rewards.code import run_tests

    path = shared_data / "code" / "humaneval.jsonl"
    problems = {p.id: p for p in load_dataset(path)}
    needing = [pid for pid, p in problems.items() if "setup" in p.tests]
    assert sorted(needing) == ["HumanEval/32", "HumanEval/38", "HumanEval/50"]
    for pid in needing:
        assert run_tests(problems[pid].meta["solution"], problems[pid].tests, timeout=10).passed, pid


def test_dedup_cli_threshold_keeps_math500_by_default(tmp_path, shared_data):
    import json

    from archer.cli.main import main

    src = shared_data / "math" / "math500.jsonl"
    for args, kept in (([], 500), (["--threshold", "0"], 480)):
        out = tmp_path / f"out{len(args)}.jsonl"
        assert main(["data", "dedup", "--in", str(src), "--out", str(out), *args]) == 0
        assert sum(1 for line in out.read_text().splitlines() if json.loads(line)) == kept
