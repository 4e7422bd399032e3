"""One GPT-2 backbone, several heads: sentiment (3-way), topic (K-way) and a pooled embedding.

A single forward pass serves every head. Rows may carry one label or both: a missing label is
``-100`` and drops out of that head's loss (per-task masks), so mixed datasets (PhraseBank has
sentiment only, AG News topic only) train one model jointly.

Saved as a directory: ``model.safetensors`` (weights, never pickled), ``config.json`` (the GPT-2
config), ``heads.json`` (labels, pooling) and the tokenizer files. The LM head of GPT-2 is tied to
the token embeddings, so the same directory also generates text (``models.generate``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

IGNORE = -100
SENTIMENT_LABELS = ["negative", "neutral", "positive"]


@dataclass
class HeadsConfig:
    """The heads on top of the backbone and how the sequence is pooled."""

    sentiment_labels: list[str] = field(default_factory=lambda: list(SENTIMENT_LABELS))
    topic_labels: list[str] = field(default_factory=list)
    pooling: str = "mean"  # "mean" over real tokens, or "last" real token
    dropout: float = 0.1


@dataclass
class MultiHeadOutput:
    """What one forward pass returns (logits per head, pooled embedding, losses if labelled)."""

    sentiment_logits: torch.Tensor  # (B, 3)
    topic_logits: torch.Tensor | None  # (B, K) or None without a topic head
    embedding: torch.Tensor  # (B, d), pooled last hidden state
    loss: torch.Tensor | None = None
    losses: dict[str, float] = field(default_factory=dict)


class MultiHeadGPT(nn.Module):
    """GPT-2 transformer + linear heads over a pooled representation."""

    def __init__(self, transformer: nn.Module, heads: HeadsConfig) -> None:
        super().__init__()
        self.transformer = transformer  # transformers.GPT2Model
        self.heads = heads
        d = transformer.config.n_embd
        self.dropout = nn.Dropout(heads.dropout)
        self.sentiment = nn.Linear(d, len(heads.sentiment_labels))
        self.topic = nn.Linear(d, len(heads.topic_labels)) if heads.topic_labels else None

    @property
    def config(self):
        """The backbone's GPT-2 config."""
        return self.transformer.config

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) hidden states -> (B, d), ignoring pad positions (right padding)."""
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        if self.heads.pooling == "last":
            last = attention_mask.sum(dim=1).clamp(min=1) - 1  # index of the last real token
            return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        sentiment: torch.Tensor | None = None,
        topic: torch.Tensor | None = None,
    ) -> MultiHeadOutput:
        """Run every head; ``sentiment``/``topic`` are (B,) class ids with -100 where unlabelled."""
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embedding = self.pool(hidden, attention_mask)  # (B, d)
        x = self.dropout(embedding)
        sent_logits = self.sentiment(x)
        topic_logits = self.topic(x) if self.topic is not None else None
        losses: dict[str, torch.Tensor] = {}
        if sentiment is not None and (sentiment != IGNORE).any():
            losses["sentiment"] = F.cross_entropy(sent_logits.float(), sentiment, ignore_index=IGNORE)
        if topic is not None and topic_logits is not None and (topic != IGNORE).any():
            losses["topic"] = F.cross_entropy(topic_logits.float(), topic, ignore_index=IGNORE)
        loss = sum(losses.values()) if losses else None
        return MultiHeadOutput(sent_logits, topic_logits, embedding, loss, {k: float(v.detach()) for k, v in losses.items()})

    # ------------------------------------------------------------------ persistence
    def save(self, out_dir: Path, tokenizer) -> None:
        """Write weights (safetensors), GPT-2 config, heads and tokenizer to ``out_dir``."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        self.transformer.config.to_json_file(str(out_dir / "config.json"))
        (out_dir / "heads.json").write_text(json.dumps(asdict(self.heads), indent=2), encoding="utf-8")
        tokenizer.save_pretrained(str(out_dir))

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> tuple[MultiHeadGPT, object]:
        """Load a saved model directory; returns ``(model in eval mode, tokenizer)``."""
        from safetensors.torch import load_file
        from transformers import GPT2Config, GPT2Model

        from models.tokenizer import load_tokenizer

        model_dir = Path(model_dir)
        config = GPT2Config.from_json_file(str(model_dir / "config.json"))
        heads = HeadsConfig(**json.loads((model_dir / "heads.json").read_text(encoding="utf-8")))
        model = cls(GPT2Model(config), heads)
        model.load_state_dict(load_file(str(model_dir / "model.safetensors"), device=device))
        return model.to(device).eval(), load_tokenizer(model_dir)


def from_backbone(lm_model, heads: HeadsConfig) -> MultiHeadGPT:
    """Put heads on a (pre)trained ``GPT2LMHeadModel``: its transformer becomes the backbone."""
    return MultiHeadGPT(lm_model.transformer, heads)
