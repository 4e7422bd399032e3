"""One causal-LM backbone, several heads: sentiment (3-way), topic (K-way), intent (I-way), an embedding.

News models carry sentiment (+ topic); a customer-service intent model carries the intent head
alone (BANKING77's 77 intents). Each head is optional; a model has at least one.

Any ``AutoModelForCausalLM`` works (GPT-2, Llama, ...): the heads read the decoder's hidden
states (``lm.base_model``), and the LM head stays in place, so the same model still generates
text (``models.generate``). A single forward pass serves every head. Rows may carry one label or
both: a missing label is ``-100`` and drops out of that head's loss (per-task masks), so mixed
datasets (PhraseBank has sentiment only, AG News topic only) train one model jointly.

Pooling: the mean over real tokens (right padding, so the attention mask marks them) of one or
more layers' hidden states, concatenated: ``pool_layers=[-1]`` is the last layer alone (the
default), ``[-1, -8, -16]`` on a 30-layer model gives the frozen-backbone recipe its
multi-layer features (middle layers carry more of the surface semantics a linear probe uses).
The ``embedding`` output is always the mean-pooled last layer, (B, d).

Saved as a directory that is also a normal Hugging Face causal-LM checkpoint:
``config.json`` + ``model.safetensors`` (``lm.save_pretrained``), the tokenizer files,
``heads.json`` (labels, pooling, recipe) and ``heads.safetensors`` (the head weights). Never
pickled. Directories written before heads had their own file (GPT-2 only, ``transformer.*`` and
``sentiment.*`` keys in one ``model.safetensors``) still load.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from models.backbone import hidden_size, num_layers

IGNORE = -100
ADAPTER_DIR = "adapter"  # LoRA adapters (peft layout) beside an untouched base LM
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
HEAD_NAMES = ("sentiment", "topic", "intent")
# Chosen on PhraseBank (a real set the demo never trains on) among four templates: frozen SmolLM2
# features trained on the synthetic stream reached 0.72 accuracy there with it, 0.62 without.
PROMPT = ("Classify the sentiment of this financial news headline as positive, negative or neutral.\n"
          "Headline: {text}\nSentiment:")
# The intent model's instruction (support messages): the frozen features are read at the end of
# it, so it names the question the heads answer.
INTENT_PROMPT = ("Classify the intent of this message from a bank's customer.\n"
                 "Message: {text}\nIntent:")


@dataclass
class HeadsConfig:
    """The heads on top of the backbone, how the sequence is pooled, and how it was trained."""

    sentiment_labels: list[str] = field(default_factory=lambda: list(SENTIMENT_LABELS))
    topic_labels: list[str] = field(default_factory=list)
    # A customer-service intent head (BANKING77's 77 intents); empty for news models. An intent
    # model has no sentiment head (``sentiment_labels`` empty): triage reads sentiment from the
    # news model that serves ``cpu-champion``.
    intent_labels: list[str] = field(default_factory=list)
    # "mean" over real tokens, the "last" real token, or "mean+last" (both, concatenated per layer:
    # the frozen recipe's default; the prompt's last token sums up the instruction's answer)
    pooling: str = "mean"
    dropout: float = 0.1
    pool_layers: list[int] = field(default_factory=lambda: [-1])  # hidden_states indices, -1 = last
    recipe: str = "full"  # how the backbone was adapted: frozen | lora | full
    max_length: int | None = None  # tokens per text at training time; scoring uses the same
    # An instruction every text is wrapped in ("...{text}..."), e.g. PROMPT for a pretrained LM:
    # pooled states of a prompted text separate sentiment far better than the bare text's.
    prompt: str | None = None


def multilayer(n_layers: int, k: int = 3) -> list[int]:
    """``k`` hidden-state indices from the top half of a ``n_layers`` model, last first.

    30 layers -> ``[-1, -8, -16]`` (the measured frozen recipe); 2 layers -> ``[-1, -2]``.
    """
    picks = [-1 - round(n_layers * f) for f in (0.0, 0.25, 0.5)[:k]]
    return sorted(set(max(p, -n_layers - 1) for p in picks), reverse=True)


@dataclass
class SharedPrefix:
    """Tokens every row of a scoring call starts with (the prompt), run through the backbone once.

    With a prompt, about 20 of a headline's 40 tokens are the same instruction on every row. Its
    keys/values (``kv``, a transformers ``Cache`` of batch 1) and, for mean pooling, the sum of its
    hidden states per layer (``sums``) are computed once; each batch then runs only its own tokens
    on top. Causal attention makes this exact: no prefix position ever sees a later token.
    Inference only: the states are stale as soon as the weights change, so a prefix lives for one
    :func:`models.predict.predict_ids` call and is never kept on the model.
    """

    n: int  # prefix tokens
    kv: object  # transformers Cache, batch 1
    sums: dict[int, torch.Tensor]  # hidden_states index (-1: the normed last layer) -> (1, d)


@dataclass
class MultiHeadOutput:
    """What one forward pass returns (logits per head, pooled embedding, losses if labelled)."""

    sentiment_logits: torch.Tensor | None  # (B, 3) or None without a sentiment head (intent models)
    topic_logits: torch.Tensor | None  # (B, K) or None without a topic head
    embedding: torch.Tensor  # (B, d), mean-pooled last hidden state
    loss: torch.Tensor | None = None
    losses: dict[str, float] = field(default_factory=dict)
    features: torch.Tensor | None = None  # (B, feature_size), what the heads read
    intent_logits: torch.Tensor | None = None  # (B, I) or None without an intent head


class MultiHeadGPT(nn.Module):
    """Causal LM (kept whole) + linear heads over pooled hidden states."""

    def __init__(self, lm: nn.Module, heads: HeadsConfig) -> None:
        super().__init__()
        self.lm = lm  # AutoModelForCausalLM, or a peft wrapper of one while LoRA trains
        self.heads = heads
        d_in = self.feature_size
        self.dropout = nn.Dropout(heads.dropout)
        # Every head is optional (a news model has sentiment [+ topic], an intent model intent only).
        self.sentiment = nn.Linear(d_in, len(heads.sentiment_labels)) if heads.sentiment_labels else None
        self.topic = nn.Linear(d_in, len(heads.topic_labels)) if heads.topic_labels else None
        self.intent = nn.Linear(d_in, len(heads.intent_labels)) if heads.intent_labels else None
        if self.sentiment is None and self.topic is None and self.intent is None:
            raise ValueError("a model needs at least one head (sentiment, topic or intent labels)")

    def causal_lm(self) -> nn.Module:
        """The Hugging Face causal LM (unwrapped from peft while LoRA is attached)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    @property
    def config(self):
        """The backbone's Hugging Face config."""
        return self.causal_lm().config

    @property
    def feature_size(self) -> int:
        """Width of what the heads read: hidden size x pooled layers (x 2 for ``mean+last``)."""
        per_layer = 2 if self.heads.pooling == "mean+last" else 1
        return hidden_size(self.config) * len(self.heads.pool_layers) * per_layer

    @staticmethod
    def _last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, d): the state at each row's last real token (right padding)."""
        last = attention_mask.sum(dim=1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]

    @staticmethod
    def _mean(hidden: torch.Tensor, attention_mask: torch.Tensor, prefix: SharedPrefix | None, layer: int
              ) -> torch.Tensor:
        """(B, T, d) -> (B, d): the mean over real tokens, the shared prefix's tokens included."""
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        total, count = (hidden * mask).sum(dim=1), mask.sum(dim=1)
        if prefix is not None:
            total, count = total + prefix.sums[layer].to(total.dtype), count + prefix.n
        return total / count.clamp(min=1.0)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor, prefix: SharedPrefix | None = None,
             layer: int = -1) -> torch.Tensor:
        """(B, T, d) hidden states -> (B, d) (``mean+last``: (B, 2d)), ignoring pad positions.

        With a ``prefix`` the rows' first ``prefix.n`` tokens are not in ``hidden``: the mean adds
        their summed states of ``layer`` back in, so the result equals pooling the whole row.
        """
        if self.heads.pooling == "last":
            return self._last_token(hidden, attention_mask)
        mean = self._mean(hidden, attention_mask, prefix, layer)
        if self.heads.pooling == "mean+last":
            return torch.cat([mean, self._last_token(hidden, attention_mask)], dim=-1)
        return mean

    def layers_read(self) -> list[int]:
        """The hidden-state indices the heads and the embedding read (-1 always)."""
        return sorted(set(self.heads.pool_layers) | {-1})

    @torch.no_grad()
    def shared_prefix(self, prefix_ids: list[int], device: torch.device | str = "cpu") -> SharedPrefix:
        """Run ``prefix_ids`` once (batch 1) and keep what :meth:`encode` needs to skip them."""
        ids = torch.tensor([prefix_ids], dtype=torch.long, device=device)
        out = self.causal_lm().base_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                                          output_hidden_states=True)
        sums = {i: (out.last_hidden_state if i == -1 else out.hidden_states[i]).sum(dim=1)
                for i in self.layers_read()}
        return SharedPrefix(n=len(prefix_ids), kv=out.cache, sums=sums)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: SharedPrefix | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features (B, k*d), embedding (B, d), last hidden (B, T, d))`` for the heads.

        ``prefix``: the rows continue a :class:`SharedPrefix` (``input_ids`` hold only the tokens
        after it); positions and attention then run on from the prefix's cached keys/values.
        """
        many = self.heads.pool_layers != [-1]
        extra = {}
        if prefix is not None:
            kv = copy.deepcopy(prefix.kv)  # the forward pass appends to it; the prefix stays batch 1
            kv.batch_repeat_interleave(input_ids.size(0))
            ones = attention_mask.new_ones(attention_mask.size(0), prefix.n)
            extra = {"cache": kv, "use_cache": True}
            full_mask = torch.cat([ones, attention_mask], dim=1)  # (B, n + T): prefix, then the row
        out = self.causal_lm().base_model(input_ids=input_ids,
                                          attention_mask=full_mask if prefix is not None else attention_mask,
                                          output_hidden_states=many, **extra)
        last = out.last_hidden_state  # (B, T, d), after the final norm
        top = self.pool(last, attention_mask, prefix, -1)  # what the heads read of the last layer
        # The embedding (recommendations, drift) is one d-vector: the mean for "mean+last".
        embedding = top[:, : last.size(-1)] if self.heads.pooling == "mean+last" else top
        if not many:
            return top, embedding, last
        # hidden_states has n_layers + 1 entries (embeddings first); its last is the normed output.
        pooled = [top if i == -1 else self.pool(out.hidden_states[i], attention_mask, prefix, i)
                  for i in self.heads.pool_layers]
        return torch.cat(pooled, dim=-1), embedding, last

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        sentiment: torch.Tensor | None = None,
        topic: torch.Tensor | None = None,
        lm_weight: float = 0.0,
        prefix: SharedPrefix | None = None,
        intent: torch.Tensor | None = None,
    ) -> MultiHeadOutput:
        """Run every head; ``sentiment``/``topic``/``intent`` are (B,) class ids, -100 where unlabelled.

        ``lm_weight > 0`` adds GPT-1's auxiliary objective, ``lm_weight`` x the next-token loss
        on the same texts, so fine-tuning the backbone does not wreck its language model.
        ``prefix`` (inference only): the rows continue a :class:`SharedPrefix`, see :meth:`encode`.
        """
        if prefix is not None and lm_weight > 0:
            raise ValueError("a shared prefix is for inference; the LM loss needs every token")
        features, embedding, last = self.encode(input_ids, attention_mask, prefix)
        x = self.dropout(features)
        logits = {h: getattr(self, h)(x) if getattr(self, h) is not None else None for h in HEAD_NAMES}
        losses: dict[str, torch.Tensor] = {}
        for head, target in (("sentiment", sentiment), ("topic", topic), ("intent", intent)):
            if target is not None and logits[head] is not None and (target != IGNORE).any():
                losses[head] = F.cross_entropy(logits[head].float(), target, ignore_index=IGNORE)
        if lm_weight > 0 and input_ids.size(1) > 1:
            lm_logits = self.causal_lm().get_output_embeddings()(last[:, :-1])  # (B, T-1, V)
            targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE)
            losses["lm"] = lm_weight * F.cross_entropy(lm_logits.float().flatten(0, 1), targets.flatten(),
                                                       ignore_index=IGNORE)
        loss = sum(losses.values()) if losses else None
        return MultiHeadOutput(logits["sentiment"], logits["topic"], embedding, loss,
                               {k: float(v.detach()) for k, v in losses.items()}, features, logits["intent"])

    # ------------------------------------------------------------------ persistence
    @staticmethod
    def saved_state(model_dir: Path) -> dict[str, torch.Tensor]:
        """Every tensor a saved directory holds, named as in ``state_dict()`` (``lm.*``, heads)."""
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        state = {f"lm.{k}": v for f in sorted(model_dir.glob("model*.safetensors")) for k, v in load_file(str(f)).items()}
        state.update(load_file(str(model_dir / "heads.safetensors")))
        return state

    def head_state(self) -> dict[str, torch.Tensor]:
        """The head weights alone (``sentiment.*``, ``topic.*``, ``intent.*``)."""
        return {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()
                if k.split(".", 1)[0] in HEAD_NAMES}

    def save(self, out_dir: Path, tokenizer) -> None:
        """Write the LM (``save_pretrained``, safetensors), heads and tokenizer to ``out_dir``."""
        from models.generate import quiet_transformers

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():  # no "Writing model shards" bar per save
            self.causal_lm().save_pretrained(str(out_dir))
        self.save_heads(out_dir, tokenizer)

    def save_heads(self, out_dir: Path, tokenizer) -> None:
        """Write the heads (safetensors + ``heads.json``) and the tokenizer, not the LM."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file(self.head_state(), str(out_dir / "heads.safetensors"), metadata={"format": "pt"})
        (out_dir / "heads.json").write_text(json.dumps(asdict(self.heads), indent=2), encoding="utf-8")
        tokenizer.save_pretrained(str(out_dir))

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> tuple[MultiHeadGPT, object]:
        """Load a saved model directory; returns ``(model in eval mode, tokenizer)``."""
        from safetensors.torch import load_file

        from models.tokenizer import load_tokenizer

        model_dir = Path(model_dir)
        heads_path = model_dir / "heads.json"
        if not heads_path.is_file():
            raise FileNotFoundError(f"{model_dir} is not a NewsPulse model directory (no heads.json)")
        heads = HeadsConfig(**json.loads(heads_path.read_text(encoding="utf-8")))
        model = cls(load_lm_with_adapter(model_dir), heads)
        state_file = model_dir / "heads.safetensors"
        state = load_file(str(state_file if state_file.is_file() else model_dir / "model.safetensors"))
        model.load_state_dict({k: v for k, v in state.items() if k.split(".", 1)[0] in HEAD_NAMES}, strict=False)
        missing = set(model.head_state()) - set(state)
        if missing:
            raise RuntimeError(f"head weights missing from {model_dir}: {sorted(missing)}")
        return model.to(device).eval(), load_tokenizer(model_dir)


def load_lm_with_adapter(model_dir: Path):
    """The directory's causal LM with its LoRA adapters (``adapter/``, if any) merged in memory.

    The files keep base and adapters apart, so ``generate`` reads the untouched pretrained LM.
    """
    import warnings

    from models.generate import load_causal_lm

    lm = load_causal_lm(model_dir)
    adapter = Path(model_dir) / ADAPTER_DIR
    if (adapter / "adapter_config.json").is_file():
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's notes on fan_in_fan_out and deprecated helpers
            lm = PeftModel.from_pretrained(lm, str(adapter)).merge_and_unload()
    return lm


def from_backbone(lm_model, heads: HeadsConfig) -> MultiHeadGPT:
    """Put heads on a (pre)trained causal LM; ``pool_layers`` are checked against its depth."""
    n = num_layers(lm_model.config)
    bad = [i for i in heads.pool_layers if not -n - 1 <= i <= n]
    if bad:
        raise ValueError(f"pool_layers {bad} do not exist in a {n}-layer model")
    return MultiHeadGPT(lm_model, heads)
