"""A Hugging Face model directory (save_pretrained) taken directly: a small BERT sequence classifier becomes a
text classifier judged by top-1 against labels and served with strings in; a plain encoder becomes a
sentence-embedding model."""

import asyncio
import json

import numpy as np
import pytest

from optimize import cli
from optimize.demos.minilm import minilm_path
from optimize.demos.sentences import generate_sentences
from optimize.huggingface import huggingface_source, load_texts
from optimize.manifest import load_verified
from optimize.source import EmbeddingSource, TextClassifierSource
from tests.optimize.test_several_inputs import parse


@pytest.fixture(scope="module")
def bert_classifier(tmp_path_factory):
    """A 2-layer BERT with a 3-class head, saved as save_pretrained writes it, with MiniLM's tokenizer; its
    labels are its own answers, so fp32 scores 1.0 and a candidate's losses show."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    directory = tmp_path_factory.mktemp("hf") / "my-bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=3,
                        id2label={0: "negative", 1: "neutral", 2: "positive"},
                        label2id={"negative": 0, "neutral": 1, "positive": 2})
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    (directory / "tokenizer.json").write_bytes((minilm_path() / "tokenizer.json").read_bytes())
    texts = generate_sentences(96, seed=3)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(texts)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([e.ids for e in encodings]),
                       attention_mask=torch.tensor([e.attention_mask for e in encodings])).logits.numpy()
    names = ["negative", "neutral", "positive"]
    lines = [json.dumps({"text": text, "label": names[int(label)]}) for text, label in zip(texts, logits.argmax(1))]
    (directory.parent / "val.jsonl").write_text("\n".join(lines) + "\n")
    return directory, directory.parent / "val.jsonl", texts, logits


def test_labels_are_class_indices_or_the_configs_names(tmp_path):
    (tmp_path / "val.jsonl").write_text('{"text": "fine", "label": "positive"}\n{"text": "bad", "label": 0}\n')
    texts, labels = load_texts(str(tmp_path / "val.jsonl"), {"negative": 0, "positive": 2})
    assert texts == ("fine", "bad") and labels.tolist() == [2, 0]
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "label": "happy"}\n')
    with pytest.raises(ValueError, match="label 'happy': expected a class index or one of negative, positive"):
        load_texts(str(tmp_path / "bad.jsonl"), {"negative": 0, "positive": 2})


def test_a_sequence_classifier_directory_is_a_text_classifier(bert_classifier):
    directory, data, texts, _ = bert_classifier
    source = huggingface_source(directory, str(data), "my-bert")
    assert isinstance(source, TextClassifierSource) and source.max_length == 128
    assert source.validation_texts == tuple(texts)


def test_the_classifier_is_optimized_and_served_with_strings_in(bert_classifier, tmp_path):
    from serve.pipeline.inference import InferencePipeline
    from serve.settings import ServeSettings

    directory, data, texts, logits = bert_classifier
    out = tmp_path / "artifact"
    assert cli.main(parse(str(directory), "--data", str(data), "--out", str(out), "--latency-repeats", "10",
                          "--candidates", "int8_dynamic", "int8_static")) == 0
    manifest, _ = load_verified(out)
    assert manifest.name == "my-bert" and manifest.metric == "top1" and manifest.before.accuracy == 1.0
    assert manifest.text_input is not None and [o.name for o in manifest.outputs] == ["logits"]
    assert manifest.outputs[0].shape == (-1, 3)
    assert {c.name for c in manifest.candidates} == {"fp32", "int8_dynamic", "int8_static"}

    pipeline = InferencePipeline(out, ServeSettings())
    body = json.dumps({"inputs": [{"name": "text", "shape": [4], "datatype": "BYTES", "data": texts[:4]}]})

    async def read_body(max_bytes: int) -> bytes:
        return body.encode()

    reply = asyncio.run(pipeline.answer_inference({}, read_body, None))
    assert reply.status == 200, reply.body
    (output,) = json.loads(reply.body)["outputs"]
    served = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    tolerance = 1e-4 if manifest.after == manifest.before else 0.25  # int8 moves logits; the class holds below
    np.testing.assert_allclose(served, logits[:4], atol=tolerance)
    if manifest.after == manifest.before:
        assert (served.argmax(1) == logits[:4].argmax(1)).all()


def test_an_encoder_directory_is_a_sentence_embedding_model(tmp_path):
    (tmp_path / "sentences.jsonl").write_text(
        "\n".join(json.dumps({"text": text}) for text in generate_sentences(40, seed=4)) + "\n")
    source = huggingface_source(minilm_path(), str(tmp_path / "sentences.jsonl"), "minilm-dir")
    assert isinstance(source, EmbeddingSource) and source.max_length == 256 and len(source.validation_texts) == 40


def test_a_directory_without_a_fast_tokenizer_is_refused_naming_the_file(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "val.jsonl").write_text('{"text": "a", "label": 0}\n')
    assert cli.main(parse(str(tmp_path), "--data", str(tmp_path / "val.jsonl"), "--out", str(tmp_path / "o"))) == 2
    assert "expected tokenizer.json" in capsys.readouterr().err
