"""Fine-tunable text classifier that shares the retrieval encoder's lower layers.

The encoder's embeddings and first ``L - K`` layers are frozen and shared; a copy of the top ``K``
layers (the *branch*) plus a linear head on mean-pooled states is trained. At serving time one
forward pass runs the trunk once, then both the original top layers (retrieval vector) and the
branch (class logits): ``(L + K) / L`` of the encoder's cost, and the artifact is only the branch
(K layers + head, float16), small enough to ship in the repository.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

BRANCH_FORMAT = 1


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(b, 1, 1, t)``: 0 where a token is kept, the dtype's minimum on padding. Every attention
    kernel of a ``BertLayer`` (eager adds it to the scores, SDPA takes it as ``attn_mask``) reads this
    form; owned here so that no private helper of transformers is called."""
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device).masked_fill_(
        ~keep, torch.finfo(dtype).min)


def layer_mask(base, attention_mask: torch.Tensor, hidden: torch.Tensor):
    """The mask a ``BertModel``'s layers take for hidden states shaped like ``hidden``: ``None`` for
    a batch without padding (nothing to mask, as transformers itself does), else ``additive_mask``."""
    if bool(attention_mask.all()):
        return None
    return additive_mask(attention_mask, hidden.dtype)


def run_layer(layer, hidden: torch.Tensor, mask) -> torch.Tensor:
    """One ``BertLayer``, called by keyword through its documented signature."""
    out = layer(hidden_states=hidden, attention_mask=mask)
    return out[0] if isinstance(out, tuple) else out


def trunk_forward(base, input_ids: torch.Tensor, attention_mask: torch.Tensor, upto: int):
    """Embeddings + layers ``[0, upto)`` of a ``BertModel``; returns (hidden, layer mask)."""
    emb = base.embeddings(input_ids=input_ids)
    mask = layer_mask(base, attention_mask, emb)
    h = emb
    for layer in base.encoder.layer[:upto]:
        h = run_layer(layer, h, mask)
    return h, mask  # (b, seq, dim)


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


class Branch(nn.Module):
    """The trainable part: top-K layer copies + dropout + linear head."""

    def __init__(self, layers: nn.ModuleList, hidden: int, n_labels: int, dropout: float = 0.1):
        super().__init__()
        self.layers = layers
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_labels)

    def forward(self, h: torch.Tensor, mask4: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = run_layer(layer, h, mask4)
        return self.head(self.drop(mean_pool(h, attention_mask)))  # (b, n_labels)


class BranchClassifier(nn.Module):
    def __init__(self, base, n_labels: int, branch_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        n = base.config.num_hidden_layers
        if not 1 <= branch_layers <= n:
            raise ValueError(f"branch_layers must be in [1, {n}], got {branch_layers}")
        self.base, self.split = base, n - branch_layers
        for p in self.base.parameters():
            p.requires_grad_(False)
        layers = nn.ModuleList(copy.deepcopy(base.encoder.layer[self.split:]))
        for p in layers.parameters():
            p.requires_grad_(True)
        self.branch = Branch(layers, base.config.hidden_size, n_labels, dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, trunk=None) -> torch.Tensor:
        """Logits; ``trunk`` = precomputed (hidden, 4-d mask) of the frozen layers (a TrunkCache)."""
        if trunk is None:
            with torch.no_grad():  # the shared trunk never trains
                trunk = trunk_forward(self.base, input_ids, attention_mask, self.split)
        h, mask4 = trunk
        return self.branch(h, mask4, attention_mask[:, : h.shape[1]])

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # frozen trunk: no dropout
        return self


def save_branch(branch: Branch, path: str | Path, labels: list[str], info: dict) -> Path:
    """float16 safetensors + a JSON sidecar (labels, split, base model, metrics)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in branch.state_dict().items()}
    meta = {"format": BRANCH_FORMAT, "labels": labels, "branch_layers": len(branch.layers), **info}
    save_file(state, str(path), metadata={"ecrec": json.dumps(meta, ensure_ascii=False)})
    return path


def branch_meta(path: str | Path) -> dict:
    """What ``save_branch`` wrote beside the weights (labels, branch_layers, name, format), read
    without loading them; ``{}`` for a file that is no safetensors or carries none (a probe's .npz)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {}).get("ecrec", "{}"))
    except (SafetensorError, OSError, ValueError):
        return {}


def load_branch(path: str | Path, base, templates=None) -> tuple[Branch, dict]:
    """The branch saved at ``path``, its layers built like ``base``'s top layers (or like
    ``templates``, float layers kept for a base whose own layers were quantized)."""
    from safetensors.torch import load_file

    meta = branch_meta(path)
    if meta.get("format") != BRANCH_FORMAT:
        raise ValueError(f"{path}: branch format {meta.get('format')} != {BRANCH_FORMAT}")
    k = meta["branch_layers"]
    source = base.encoder.layer if templates is None else templates
    layers = nn.ModuleList(copy.deepcopy(source[base.config.num_hidden_layers - k:]))
    branch = Branch(layers, base.config.hidden_size, len(meta["labels"]))
    state = {n: t.to(torch.float32) for n, t in load_file(str(path)).items()}
    branch.load_state_dict(state)
    return branch.eval(), meta


def export_hf_folder(model: BranchClassifier, tokenizer, labels: list[str], out: str | Path) -> Path:
    """A standalone Hugging Face folder: the encoder with the fine-tuned top layers merged in
    (``save_pretrained``), the tokenizer, the head and the label map."""
    from safetensors.torch import save_file

    out = Path(out)
    merged = copy.deepcopy(model.base)
    for i, layer in enumerate(model.branch.layers):
        merged.encoder.layer[model.split + i].load_state_dict(layer.state_dict())
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    save_file({k: v.contiguous() for k, v in model.branch.head.state_dict().items()}, str(out / "head.safetensors"))
    (out / "labels.json").write_text(json.dumps({"labels": labels, "pooling": "mean",
                                                 "prefix": "query: "}, ensure_ascii=False, indent=2))
    return out


class HFFolderClassifier(nn.Module):
    """Loads ``export_hf_folder`` output: a plain BertModel + linear head, mean pooling."""

    def __init__(self, folder: str | Path):
        super().__init__()
        from safetensors.torch import load_file
        from transformers import AutoModel

        folder = Path(folder)
        self.encoder = AutoModel.from_pretrained(str(folder), dtype=torch.float32, add_pooling_layer=False)
        meta = json.loads((folder / "labels.json").read_text())
        self.labels = meta["labels"]
        self.head = nn.Linear(self.encoder.config.hidden_size, len(self.labels))
        self.head.load_state_dict(load_file(str(folder / "head.safetensors")))
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(h, attention_mask))
