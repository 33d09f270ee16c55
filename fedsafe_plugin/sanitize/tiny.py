"""Tiny models built offline from configs: a student encoder and the two kinds of teacher.

They exercise the real code paths (any HF encoder, a sequence-classifier teacher, a causal guard
teacher) in seconds, with no download. They are untrained: a test that needs a teacher with
opinions trains one for a few steps.
"""

from __future__ import annotations

from pathlib import Path


def _seeded(build, seed: int):
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def _bert_config(num_labels: int = 2):
    from transformers import BertConfig

    from fedsafe_plugin.sanitize.encoder import DEFAULT_BACKBONE, resolve_backbone

    vocab = Path(resolve_backbone(DEFAULT_BACKBONE)) / "vocab.txt"
    n_vocab = sum(1 for _ in open(vocab, encoding="utf-8"))
    return BertConfig(
        vocab_size=n_vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, num_labels=num_labels,
        id2label={0: "safe", 1: "unsafe"}, label2id={"safe": 0, "unsafe": 1},
    )


def _save_minilm_tokenizer(folder: Path) -> None:
    from transformers import AutoTokenizer

    from fedsafe_plugin.sanitize.encoder import DEFAULT_BACKBONE, resolve_backbone

    AutoTokenizer.from_pretrained(resolve_backbone(DEFAULT_BACKBONE)).save_pretrained(folder)


def build_tiny_encoder(folder: str | Path, seed: int = 0) -> str:
    """A 2-layer, 32-wide BertModel with MiniLM's tokenizer, saved to `folder`; returns the path."""
    from transformers import BertModel

    folder = Path(folder)
    _seeded(lambda: BertModel(_bert_config()), seed).save_pretrained(folder)
    _save_minilm_tokenizer(folder)
    return str(folder)


def build_tiny_seqcls_teacher(folder: str | Path, seed: int = 1) -> str:
    """A tiny BertForSequenceClassification with labels safe/unsafe, saved to `folder`."""
    from transformers import BertForSequenceClassification

    folder = Path(folder)
    _seeded(lambda: BertForSequenceClassification(_bert_config()), seed).save_pretrained(folder)
    _save_minilm_tokenizer(folder)
    return str(folder)


def build_tiny_guard_teacher(folder: str | Path, seed: int = 2) -> str:
    """A tiny LlamaForCausalLM whose tokenizer (trained locally) has 'safe' and 'unsafe' tokens."""
    from fedsafe_plugin.training.tiny import TinySpec, build_tiny_model, build_tiny_tokenizer

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer(512)
    tokenizer.add_tokens(["unsafe", "safe"])
    model = build_tiny_model(TinySpec(vocab_size=512, seed=seed), tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
