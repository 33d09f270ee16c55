"""A tiny causal LM and tokenizer built offline, deterministically, for tests, demos and examples.

No causal LM ships on PyPI and the model hub is unreachable here, so the quickstart, the demo and
the fast tests use a config-initialised Llama with a byte-level BPE tokenizer trained locally.
Every process that calls these with the same arguments builds bit-identical weights, so clients
and server agree on the frozen base and only the LoRA adapter has to travel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing transformers at module load would slow `fedsafe --help`
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"

# Chat template with generation markers so assistant masks work (transformers 5).
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}" + USER + "\n{{ m['content'] }}" + END + "\n"
    "{% else %}" + ASSISTANT + "\n{% generation %}{{ m['content'] }}" + END + "{% endgeneration %}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "\n{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Shape of the tiny Llama; defaults step in ~0.04 s on 2 cores."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 1024
    max_positions: int = 256
    seed: int = 0


def _base_corpus() -> list[str]:
    """Text the tokenizer learns its merges from: the package's own synthetic data."""
    from fedsafe_plugin.demo_data import corpus

    return corpus()


@lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int, corpus_key: tuple[str, ...]) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, USER, ASSISTANT, END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus_key), trainer=trainer)
    return tok.to_str()


def build_tiny_tokenizer(vocab_size: int = 1024, corpus: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with a chat template and `<|end|>` as EOS."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    texts = tuple(corpus) if corpus is not None else tuple(_base_corpus())
    backend = Tokenizer.from_str(_tokenizer_json(vocab_size, texts))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=END, pad_token=PAD, bos_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def build_tiny_model(spec: TinySpec = TinySpec(), tokenizer: PreTrainedTokenizerFast | None = None) -> LlamaForCausalLM:
    """A config-initialised LlamaForCausalLM, seeded, with dropout 0 (Opacus needs it)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer(spec.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_lora_model(spec: TinySpec = TinySpec(), r: int = 8) -> tuple[Any, PreTrainedTokenizerFast]:
    """(model with a fresh LoRA adapter, tokenizer): the stand-in LM of the examples and demo."""
    from fedsafe_plugin.training.lora import add_lora

    tokenizer = build_tiny_tokenizer(spec.vocab_size)
    return add_lora(build_tiny_model(spec, tokenizer=tokenizer), r=r), tokenizer
