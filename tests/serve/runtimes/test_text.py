"""Tokenizing in the replica: length-sorted groups within a token budget and a padding limit, answers back in
request order."""

import numpy as np
import pytest

from optimize.manifest import TextInput
from serve.runtimes.text import TextEncoder, tokenize_in_calling_thread


@pytest.fixture(scope="module")
def tokenizer_dir():
    from optimize.demos.minilm import minilm_path

    return minilm_path()


def encoder(directory, budget, padding_limit=1.0):
    return TextEncoder(directory, TextInput(tokenizer_sha256="0" * 64, max_length=256), token_budget=budget,
                       padding_limit=padding_limit)


def texts(*items):
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


SENTENCES = texts("a", "a much longer sentence with many more words in it than the others", "mid length one here",
                  "", "short two", "word " * 300)


def test_grouped_answers_come_back_in_request_order_and_match_one_at_a_time(tokenizer_dir):
    calls = []

    def token_sums(feed):  # a stand-in model: each row's sum of real token ids
        calls.append(feed["input_ids"].shape)
        return (feed["input_ids"] * feed["attention_mask"]).sum(axis=1, keepdims=True)

    small = encoder(tokenizer_dir, budget=64)
    grouped = small.run_grouped(SENTENCES, token_sums)
    alone = np.concatenate([token_sums(small.encode(texts(s))) for s in SENTENCES])
    np.testing.assert_array_equal(grouped, alone)
    grouped_calls = calls[: len(calls) - len(SENTENCES)]
    assert len(grouped_calls) > 1, "a small budget must split the batch"
    assert all(rows * longest <= 64 or rows == 1 for rows, longest in grouped_calls)


def test_long_strings_are_truncated_to_max_length(tokenizer_dir):
    feed = encoder(tokenizer_dir, budget=4096).encode(texts("word " * 300))
    assert feed["input_ids"].shape == (1, 256) and feed["attention_mask"].sum() == 256


def test_padding_is_masked(tokenizer_dir):
    feed = encoder(tokenizer_dir, budget=4096).encode(texts("a", "two words"))
    assert feed["attention_mask"].tolist()[0][-1] == 0 and feed["input_ids"][0, -1] == 0


def test_similar_lengths_share_a_call_on_a_cpu_and_the_whole_batch_on_a_gpu_unless_configured():
    from serve.runtimes.text import choose_padding_limit, choose_token_budget

    assert choose_token_budget(None) >= 256 * 128  # a full batch of the longest sentences: no limit of its own
    assert choose_token_budget(512) == 512
    assert 0 < choose_padding_limit(None, on_gpu=False) < 0.5
    assert choose_padding_limit(None, on_gpu=True) == 1.0
    assert choose_padding_limit(0.0, on_gpu=True) == 0.0 and choose_padding_limit(0.3, on_gpu=False) == 0.3


def test_groups_keep_padding_within_the_limit_and_answer_in_request_order(tokenizer_dir):
    rng = np.random.default_rng(4)
    batch = texts(*(" ".join(["word"] * int(n)) for n in rng.integers(1, 40, 32)))
    calls = []

    def token_sums(feed):
        calls.append((feed["input_ids"].shape, int(feed["attention_mask"].sum())))
        return (feed["input_ids"] * feed["attention_mask"]).sum(axis=1, keepdims=True)

    similar = encoder(tokenizer_dir, budget=1 << 20, padding_limit=0.1)
    grouped = similar.run_grouped(batch, token_sums)
    alone = np.concatenate([token_sums(similar.encode(texts(s))) for s in batch])
    np.testing.assert_array_equal(grouped, alone)
    grouped_calls = calls[: len(calls) - len(batch)]
    assert 1 < len(grouped_calls) < len(batch), "similar lengths share calls, different ones do not"
    for (rows, longest), real in grouped_calls:
        assert rows * longest - real <= 0.1 * rows * longest, f"{rows}x{longest} with {real} real tokens"
    calls.clear()
    encoder(tokenizer_dir, budget=1 << 20, padding_limit=0.0).run_grouped(batch, token_sums)
    assert all(rows * longest == real for (rows, longest), real in calls), "a limit of 0: equal lengths only"


def test_a_padding_limit_outside_zero_to_one_is_refused(tokenizer_dir):
    with pytest.raises(ValueError, match="from 0 to 1"):
        encoder(tokenizer_dir, budget=64, padding_limit=1.5)


def test_a_budget_of_one_runs_every_sentence_alone_in_request_order(tokenizer_dir):
    calls = []

    def token_sums(feed):
        calls.append(feed["input_ids"].shape[0])
        return (feed["input_ids"] * feed["attention_mask"]).sum(axis=1, keepdims=True)

    single = encoder(tokenizer_dir, budget=1).run_grouped(SENTENCES, token_sums)
    padded = encoder(tokenizer_dir, budget=1 << 20).run_grouped(SENTENCES, token_sums)
    np.testing.assert_array_equal(single, padded)
    assert calls[: len(SENTENCES)] == [1] * len(SENTENCES) and calls[len(SENTENCES):] == [len(SENTENCES)]


def test_a_token_multiple_pads_the_token_axis_up_to_it_but_never_past_max_length(tokenizer_dir):
    spec = TextInput(tokenizer_sha256="0" * 64, max_length=250)
    plain = TextEncoder(tokenizer_dir, spec).encode(SENTENCES[:3])
    rounded = TextEncoder(tokenizer_dir, spec, token_multiple=32).encode(SENTENCES[:3])
    assert plain["input_ids"].shape[1] % 32 != 0 and rounded["input_ids"].shape[1] == 32
    np.testing.assert_array_equal(rounded["input_ids"][:, : plain["input_ids"].shape[1]], plain["input_ids"])
    assert rounded["attention_mask"][:, plain["input_ids"].shape[1]:].sum() == 0  # the added tokens are masked
    longest = TextEncoder(tokenizer_dir, spec, token_multiple=32).encode(SENTENCES[-1:])
    assert longest["input_ids"].shape == (1, 250)  # 256 would pass max_length: capped there


def test_the_token_multiple_can_be_turned_off_for_the_next_calls(tokenizer_dir):
    spec = TextInput(tokenizer_sha256="0" * 64, max_length=250)
    encoder = TextEncoder(tokenizer_dir, spec, token_multiple=32)
    assert encoder.encode(SENTENCES[:3])["input_ids"].shape[1] == 32
    encoder.pad_tokens_to_multiple_of(1)
    plain = TextEncoder(tokenizer_dir, spec).encode(SENTENCES[:3])
    assert encoder.encode(SENTENCES[:3])["input_ids"].shape == plain["input_ids"].shape
    with pytest.raises(ValueError, match="at least 1"):
        encoder.pad_tokens_to_multiple_of(0)


def test_on_a_cpu_tokenizers_thread_pool_is_off_unless_the_user_chose():
    environ: dict[str, str] = {}
    tokenize_in_calling_thread(on_gpu=False, environ=environ)
    assert environ == {"TOKENIZERS_PARALLELISM": "false"}
    chosen = {"TOKENIZERS_PARALLELISM": "true"}
    tokenize_in_calling_thread(on_gpu=False, environ=chosen)
    assert chosen == {"TOKENIZERS_PARALLELISM": "true"}
    on_gpu: dict[str, str] = {}
    tokenize_in_calling_thread(on_gpu=True, environ=on_gpu)
    assert on_gpu == {}
