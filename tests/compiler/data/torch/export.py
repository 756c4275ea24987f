"""Make this directory's ONNX files: HuggingFace Transformers with random weights, exported by torch.onnx.export.

    python tests/compiler/data/torch/export.py          # with a Python that has torch and transformers

The architectures are the real ones (BERT, GPT-2, DistilBERT, ViT as transformers builds them, exported by
torch's default exporter), shrunk so the files stay small: 2 layers, hidden 64, 2 heads, a 256-word
vocabulary, sequence 16, 32x32 images. tests/compiler/test_torch_exports.py compiles and checks them
without torch installed.
"""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "..", "benchmarks"))

from torch_export import export, huggingface_model  # noqa: E402

SEQ = 16
TINY = {
    "bert_base": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=256,
                      vocab_size=256, max_position_embeddings=32),
    "gpt2": dict(n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=32),
    "distilbert": dict(n_layers=2, dim=64, n_heads=2, hidden_dim=256, vocab_size=256, max_position_embeddings=32),
    "vit_b16_hf": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=256,
                       image_size=32, patch_size=8),
}
FILES = {"bert_base": "bert_tiny", "gpt2": "gpt2_tiny", "distilbert": "distilbert_tiny", "vit_b16_hf": "vit_tiny"}

if __name__ == "__main__":
    import torch

    for name, params in TINY.items():
        torch.manual_seed(0)
        built = huggingface_model(name, False, params=params, seq=SEQ)
        print(json.dumps(export(name, HERE, legacy=False, opset=None, built=built, file=FILES[name])))
