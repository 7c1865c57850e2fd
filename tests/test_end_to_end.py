"""Each bundle, loaded by the runtime on onnxruntime, gives its reference's outputs (answer text, start, end,
token ids, token strings and sequences exact; scores within 1e-4) on real-text inputs. The reference is the one
builds verify against: the transformers pipeline, or on transformers >= 5.3 (no question-answering pipeline) the
runtime head on the PyTorch model's logits."""

from __future__ import annotations

import pytest
from conftest import MLM_CHECKPOINTS, QA_CHECKPOINTS, SCORE_ATOL

import distilrt
from distilrt.export.probes import fill_mask_probes, question_answering_probes
from distilrt.export.task_reference import PIPELINE
from distilrt.export.verify import verify_task

UNICODE_QA = [
    ("Où est né Gérard Depardieu ?", "Gérard Depardieu est né à Châteauroux, en France, le 27 décembre 1948."),
    ("Who founded Zürich's café?", "The café in Zürich — famous for crème brûlée — was founded by Jürgen Müller in 1901."),
    ("What is naïve?", "A naïve approach ignores the coöperation of façade builders; 東京 and Москва are far apart."),
    ("WHAT IS THE CAPITAL?", "PARIS IS THE CAPITAL OF FRANCE. paris is also its largest city."),
    ("When?", "It happened in 1066 😀 at Hastings."),
]


@pytest.fixture(scope="module")
def references(tiny_checkpoints):
    from distilrt.export.checkpoint import load_model, load_tokenizer, resolve_checkpoint, tokenizer_settings
    from distilrt.export.task_reference import task_reference
    from distilrt.export.transformers_support import fusable_attn_implementation

    references = {}
    for name, directory in tiny_checkpoints.items():
        checkpoint = resolve_checkpoint(str(directory))
        hf_tokenizer = load_tokenizer(checkpoint)
        model = load_model(checkpoint, fusable_attn_implementation())
        settings = tokenizer_settings(hf_tokenizer, checkpoint.spec.max_sequence(checkpoint.config))
        references[name] = task_reference(checkpoint.task, model, hf_tokenizer, settings)
    return references


def qa_probes():
    probes = question_answering_probes(48, seed=7)
    probes += [((), {"question": q, "context": c}) for q, c in UNICODE_QA]
    # a small window with a small stride: many spans per context
    probes += [((), {**kwargs, "max_seq_len": 64, "doc_stride": 16, "top_k": 2}) for _, kwargs in probes[:4]]
    probes += [((), {**probes[5][1], "handle_impossible_answer": True})]
    probes += [((), {**probes[6][1], "max_answer_len": 3, "top_k": 4})]
    # a batch of mixed lengths in one call (as keywords: transformers 5.0-5.2's pipeline takes no positional inputs)
    batch = [kw for _, kw in probes[30:46]]
    probes += [((), {"question": [kw["question"] for kw in batch], "context": [kw["context"] for kw in batch]})]
    return probes


def mlm_probes(mask: str):
    probes = fill_mask_probes(mask, 52, seed=7)
    probes += [
        ((f"Le café de la {mask} est très célèbre à Zürich.",), {}),
        ((f"ÉCOLE NORMALE {mask} DE PARIS",), {"top_k": 3}),
        ((f"{mask} {mask} {mask}",), {"top_k": 2}),
        ((f"東京 is the {mask} of Japan 😀.",), {}),
        (([f"Short {mask}.", f"A much longer sentence about the history of the {mask} and its many neighbours."],), {}),
        ((f"The {mask} sat on the mat.",), {"targets": ["cat", "dog", "the"]}),
    ]
    return probes


@pytest.mark.parametrize("name", QA_CHECKPOINTS)
def test_question_answering_matches_its_reference(tiny_bundles, references, name):
    probes = qa_probes()
    assert len(probes) >= 50
    result = verify_task("question-answering", probes, references[name].run, distilrt.load(tiny_bundles[name].bundle),
                         SCORE_ATOL)
    assert result.matched == len(probes)


@pytest.mark.parametrize("name", MLM_CHECKPOINTS)
def test_fill_mask_matches_the_pipeline(tiny_bundles, references, name):
    assert references[name].kind == PIPELINE  # every supported transformers has the fill-mask pipeline
    probes = mlm_probes(references[name].run.tokenizer.mask_token)
    assert len(probes) >= 50
    result = verify_task("fill-mask", probes, references[name].run, distilrt.load(tiny_bundles[name].bundle),
                         SCORE_ATOL)
    assert result.matched == len(probes)


def test_long_contexts_really_use_several_windows(tiny_bundles):
    """Guard for the test above: the long-context probes must exceed one 384-token window."""
    from distilrt.tokenization import load_tokenizer

    tokenizer = load_tokenizer(tiny_bundles["distilbert-base-uncased-distilled-squad"].bundle / "tokenizer.json")
    long_ones = [kw for _, kw in question_answering_probes(48, seed=7)[36:]]
    assert all(len(tokenizer.encode(kw["question"], kw["context"]).ids) > 384 for kw in long_ones)
