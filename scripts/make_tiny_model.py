#!/usr/bin/env python3
"""Rebuild the tiny demo model shipped in bootstrap/assets/tiny-qwen2 (the `tiny` profile).

A real Qwen2ForCausalLM (hidden 128, 2 layers, 2 heads, 1 KV head, intermediate 256, bf16, random weights
from a fixed seed) plus a byte-level BPE tokenizer trained on a small built-in text with a ChatML chat
template: ~1 MB on disk, served by real vLLM on the CPU in about a minute. Its answers are noise; its
server, metrics and process tree are the real thing.

Needs torch, transformers and tokenizers (the vLLM environment has them):
    python scripts/make_tiny_model.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = """vboot takes a developer with one GPU box from a fresh machine to a vLLM server they trust.
The doctor checks the NVIDIA driver, CUDA, torch, vLLM, disk, memory, ports and leftover processes.
Hello! How are you today? I am fine, thank you. What is the capital of France? Paris is the capital.
The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { } < > , . ; : ' " ? !
def main():\n    print("hello, world")\n    return 0\n
Prometheus scrapes the metrics endpoint; requests running, requests waiting, tokens per second.
"""


def main(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(20261127)
    out.mkdir(parents=True, exist_ok=True)

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    fast.save_pretrained(out)

    vocab = len(fast)
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True, torch_dtype="bfloat16",
        bos_token_id=fast.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.max_new_tokens = 32
    model.save_pretrained(out, safe_serialization=True)
    for p in out.iterdir():
        p.chmod(0o644)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size} bytes, vocab {vocab})")


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "bootstrap" / "assets" / "tiny-qwen2"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
