"""Tiny random models built in-process and saved like real ones.

Every model is saved with ``save_pretrained`` and loaded back through ``actwh.models.loading``,
the same code users run. The tokenizer is a byte-level BPE trained here with ``tokenizers``.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The history of the Roman Empire is long and complicated.",
    "You are such a piece of work, and everyone knows it.",
    "Holy cow, that was a great game last night!",
    "Scientists have recently discovered that bees can count.",
    "Shut up, you idiot, nobody asked for your opinion.",
    "The weather forecast for tomorrow says rain in the morning.",
    "My favorite book as a child was about a dragon and a knight.",
    "Water boils at a temperature of one hundred degrees.",
]


def _train_tokenizer(with_bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    if with_bos:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
    kwargs = {"bos_token": "<s>"} if with_bos else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", **kwargs
    )
    tokenizer.chat_template = CHAT_TEMPLATE  # so that chat prompts work on tiny models too
    return tokenizer


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_gpt2(path: Path, n_layer: int = 3, seed: int = 0, extra_tokens: list[str] = ()) -> Path:
    """A tiny GPT-2; ``extra_tokens`` are added to its vocabulary whole (as a hub model's
    tokenizer may hold any string)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _train_tokenizer(with_bos=False)
    tokenizer.add_tokens(list(extra_tokens))
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=32,
        n_layer=n_layer,
        n_head=4,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_llama(
    path: Path, n_layer: int = 3, seed: int = 0, model_type: str = "llama", mlp_bias: bool = False
) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = _train_tokenizer(with_bos=True)
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **({"mlp_bias": True} if mlp_bias else {}),
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# The families beyond GPT-2 and Llama: each config's own names for a tiny size.
FAMILIES = {
    "gpt_neox": dict(intermediate_size=64, rotary_pct=0.5, use_parallel_residual=True),
    "gemma": dict(intermediate_size=48, num_key_value_heads=2, head_dim=8),
    "gemma2": dict(
        intermediate_size=48, num_key_value_heads=2, head_dim=8, final_logit_softcapping=0.5
    ),
    "gemma3_text": dict(intermediate_size=48, num_key_value_heads=2, head_dim=8),
    "phi3": dict(intermediate_size=48, num_key_value_heads=2),
    "olmo2": dict(intermediate_size=48, num_key_value_heads=2),
}


def build_family(path: Path, model_type: str, n_layer: int = 3, seed: int = 0) -> Path:
    """A tiny random model of ``model_type`` (a key of :data:`FAMILIES`). Its norms' gains are
    random too (Gemma initialises them to 0, i.e. a gain of 1), so an analysis that forgets a
    norm gets a different number. Gemma 2's soft-cap is low (0.5: random logits stay under ~1)
    so that it changes them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = _train_tokenizer(with_bos=True)
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **FAMILIES[model_type],
    )
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.uniform_(0.5, 1.5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
