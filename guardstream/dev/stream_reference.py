"""Qwen3Guard-Stream as a plain Hugging Face module: `Qwen3Model` plus the two head pairs.

This is the reference that faster Stream engines are checked against, and the module the tiny
fixture checkpoint is trained with. Attribute names equal the checkpoint's weight names, so a
real `Qwen3ForGuardModel` safetensors file loads with `load_state_dict(strict=True)` and no
`trust_remote_code`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Qwen3Config, Qwen3Model
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from guardstream.workers.engines.labels import StreamLabels


class StreamGuardReference(nn.Module):
    def __init__(self, config: Qwen3Config, raw_config: dict):
        super().__init__()
        hidden, inner, eps = config.hidden_size, raw_config["guard_inner_size"], config.rms_norm_eps
        self.model = Qwen3Model(config)
        self.risk_level_category_pre = nn.Linear(hidden, inner, bias=False)
        self.risk_level_category_layernorm = Qwen3RMSNorm(inner, eps=eps)
        self.risk_level_head = nn.Linear(inner, raw_config["num_risk_level"], bias=False)
        self.category_head = nn.Linear(inner, raw_config["num_category"], bias=False)
        self.query_risk_level_category_pre = nn.Linear(hidden, inner, bias=False)
        self.query_risk_level_category_layernorm = Qwen3RMSNorm(inner, eps=eps)
        self.query_risk_level_head = nn.Linear(inner, raw_config["num_query_risk_level"], bias=False)
        self.query_category_head = nn.Linear(inner, raw_config["num_query_category"], bias=False)
        self.labels = StreamLabels.from_config(raw_config)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> StreamGuardReference:
        path = Path(path)
        raw = json.loads((path / "config.json").read_text())
        module = cls(Qwen3Config.from_dict(raw), raw)
        module.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
        return module.to(dtype).eval()

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def response_logits(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.risk_level_category_layernorm(self.risk_level_category_pre(h))
        return self.risk_level_head(x), self.category_head(x)

    def query_logits(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.query_risk_level_category_layernorm(self.query_risk_level_category_pre(h))
        return self.query_risk_level_head(x), self.query_category_head(x)
