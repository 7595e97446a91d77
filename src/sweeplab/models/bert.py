"""BERT for text classification (seed: transfer learning by fine-tuning).

- ``backbone``: a Hugging Face ``transformers`` encoder: loaded from a local
  folder that ``save_pretrained`` wrote (``model.weights``, offline), from the
  hub with ``model.download_weights=true``, or with no weights a small BERT
  built from ``hidden_size`` / ``num_layers`` / ``num_heads`` and trained from
  scratch on the data's own vocabulary.
- ``head``: dropout and a new ``Linear`` on the first token's hidden state
  ([CLS]), as ``BertForSequenceClassification`` does, for any encoder.

Names follow the CNN zoo, so ``model.freeze_backbone=true`` and
``param_groups='[{params: backbone, lr: 2e-5}]'`` work the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class BertClassifier(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        text: Any = None,
        weights: str | None = None,
        download_weights: bool = False,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int | None = None,
        dropout: float = 0.1,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        if text is None:
            raise ValueError("model=bert reads text: use data=sentiment, text_csv or text_folder")
        self.pad_id = int(text.pad_id)
        self.loaded_from: str | None = None
        if weights:
            self.backbone = _load_encoder(str(weights), bool(download_weights))
            self.cls_id = None  # the model's own tokenizer already starts each text with [CLS]
            self.loaded_from = str(weights)
            print(f"model.weights: {type(self.backbone).__name__} encoder and its tokenizer loaded from {weights}; new head")
        else:
            from transformers import BertConfig, BertModel

            if hidden_size % num_heads:
                raise ValueError(f"model.hidden_size={hidden_size} must be a multiple of model.num_heads={num_heads}")
            self.cls_id = text.cls_id
            config = BertConfig(
                vocab_size=len(text.vocabulary),
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=intermediate_size or 4 * hidden_size,
                max_position_embeddings=int(input_shape[0]) + 1,
                pad_token_id=self.pad_id,
                hidden_dropout_prob=dropout,
                attention_probs_dropout_prob=dropout,
            )
            self.backbone = BertModel(config, add_pooling_layer=False)
        width = self.backbone.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_outputs))
        self.freeze_backbone = bool(freeze_backbone)
        if self.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            self.backbone.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.cls_id is not None:
            ids = torch.cat([torch.full_like(ids[:, :1], self.cls_id), ids], dim=1)
        hidden = self.backbone(input_ids=ids, attention_mask=(ids != self.pad_id).long()).last_hidden_state
        return self.head(hidden[:, 0])

    def train(self, mode: bool = True) -> BertClassifier:
        super().train(mode)
        if self.freeze_backbone:  # a frozen encoder is a fixed feature extractor: dropout stays off
            self.backbone.eval()
        return self


def _load_encoder(source: str, download: bool) -> nn.Module:
    from transformers import AutoModel

    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ValueError(f"model.weights={source}: no config.json in the folder; give the folder save_pretrained wrote")
        return AutoModel.from_pretrained(str(local), local_files_only=True)
    if not download:
        raise ValueError(
            f"model.weights={source}: no such local folder; give the folder save_pretrained wrote, "
            "or add model.download_weights=true to fetch it from the Hugging Face hub"
        )
    from sweeplab.text.tokenizers import download_pretrained

    return download_pretrained(AutoModel, source)
