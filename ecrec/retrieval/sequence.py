"""A sequence retriever: a shopper's recent items -> one query vector in the item index's space.

SASRec-style (Kang & McAuley 2018) but over *text* vectors, as UniSRec does: the inputs are the
encoder's item vectors (what the FAISS index already holds), projected down, plus positions, run
through a small causal transformer. The output is projected back to the encoder's space and
normalised, so serving needs no item table: the query vector goes straight to FAISS (inner
product on the same unit vectors), and a new catalog item is retrievable the moment it is
embedded. Trained with a full softmax over the catalog against the next item (``training``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class SequenceConfig:
    dim: int = field(default=384, metadata={"help": "item vector size (the encoder's)"})
    hidden: int = field(default=256, metadata={"help": "transformer width"})
    layers: int = field(default=2, metadata={"help": "transformer blocks"})
    heads: int = 4
    max_len: int = field(default=50, metadata={"help": "most recent items read"})
    dropout: float = 0.2
    input_dropout: float = field(default=0.2, metadata={"help": "dropout on the item vectors read"})
    id_items: int = field(default=0, metadata={"help": "catalog size for learned id embeddings (0: text only)"})
    temperature: float = field(default=0.02, metadata={"help": "initial softmax temperature (learned)"})


class SequenceModel(nn.Module):
    """q_t = normalise(EMA of the item vectors up to t + transformer correction); items are scored
    by ``scale * q . (A x)`` with A a learned linear map (identity at start). At the start the
    model *is* the recency-weighted mean of the history (the zero-shot rule); training learns
    the decay, the correction and A. ``query`` folds A in (A^T q), so FAISS searches raw vectors."""

    def __init__(self, config: SequenceConfig = SequenceConfig()):
        super().__init__()
        c = self.config = config
        self.inp = nn.Linear(c.dim, c.hidden)
        self.pos = nn.Embedding(c.max_len, c.hidden)
        self.drop = nn.Dropout(c.input_dropout)
        layer = nn.TransformerEncoderLayer(c.hidden, c.heads, 2 * c.hidden, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.hidden)
        self.out = nn.Linear(c.hidden, c.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.decay_logit = nn.Parameter(torch.tensor(math.log(0.7 / 0.3)))
        self.item_map = nn.Linear(c.dim, c.dim, bias=False)
        with torch.no_grad():
            self.item_map.weight.copy_(torch.eye(c.dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.temperature)))
        self.ids = nn.Embedding(c.id_items, c.dim) if c.id_items else None
        self.vocab: dict[str, int] = {}  # item id -> id row (set from the checkpoint)
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.01)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (b, L, dim) item vectors, oldest first, right-padded. Returns (b, L, dim) unit query
        vectors; position t has read items 0..t only (causal), so padding after a sequence's end
        never reaches it and a prefix reads exactly as the shorter sequence would alone."""
        L = x.shape[1]
        steps = torch.arange(L, device=x.device)
        age = steps[:, None] - steps[None, :]  # (L, L): t - i
        gamma = torch.sigmoid(self.decay_logit)
        ema = torch.where(age >= 0, gamma ** age.clamp(min=0).float(), torch.zeros((), device=x.device)) @ x
        if self.ids is not None and ids is not None:  # id -1: an item the model never saw
            x = x + self.ids(ids.clamp(min=0)) * (ids >= 0)[..., None]
        h = self.inp(self.drop(x)) + self.pos(steps.clamp(max=self.config.max_len - 1))[None]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), 1)
        h = self.blocks(h, mask=causal, is_causal=True)
        q = nn.functional.normalize(ema, dim=-1) + self.out(self.norm(h))
        return nn.functional.normalize(q, dim=-1)

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=200.0)

    def item_matrix(self, X: torch.Tensor) -> torch.Tensor:
        """(n, dim) item vectors -> what queries are scored against."""
        return self.item_map(X) if self.ids is None else self.item_map(X) + self.ids.weight

    @torch.no_grad()
    def search_vector(self, q: torch.Tensor) -> torch.Tensor:
        """(..., dim) queries -> vectors whose inner product with *raw* item vectors ranks like
        training's ``q . (A x)``: A^T q."""
        return q @ self.item_map.weight

    def coverage(self, item_ids: list[str]) -> float:
        """Share of ``item_ids`` the model learned embeddings for (1.0 for a text-only model)."""
        if self.ids is None or not self.vocab:
            return 1.0
        return sum(i in self.vocab for i in item_ids) / max(len(item_ids), 1)

    @torch.no_grad()
    def id_candidates(self, q: torch.Tensor, n: int) -> list[str]:
        """The ``n`` items whose learned id rows score highest for the unit query ``q``. FAISS holds
        text vectors only, so an item this model ranks for what shoppers did after the history,
        not for its text, is found here; ``item_scores`` then scores it in full."""
        if self.ids is None or not self.vocab or n <= 0:
            return []
        if len(getattr(self, "_row_items", ())) != len(self.vocab):
            self._row_items = sorted(self.vocab, key=self.vocab.get)  # id row -> item id
        s = self.ids.weight[: len(self._row_items)] @ q
        top = torch.topk(s, min(n, len(s))).indices.tolist()
        return [self._row_items[r] for r in top]

    def id_rows(self, item_ids) -> torch.Tensor | None:
        if self.ids is None or item_ids is None:
            return None
        return torch.tensor([self.vocab.get(i, -1) for i in item_ids], dtype=torch.long)

    @torch.no_grad()
    def query(self, vectors: np.ndarray, item_ids: list[str] | None = None) -> torch.Tensor:
        """(n, dim) item vectors of the recent items, oldest first (and their ids, when the model
        has id embeddings) -> (dim,) unit query q. ``search_vector(q)`` is its FAISS form."""
        x = torch.from_numpy(np.ascontiguousarray(vectors[-self.config.max_len:], dtype=np.float32))[None]
        rows = self.id_rows(item_ids[-self.config.max_len:] if item_ids else None)
        return self(x, rows[None] if rows is not None else None)[0, -1]

    @torch.no_grad()
    def item_scores(self, q: torch.Tensor, X: np.ndarray, item_ids: list[str]) -> np.ndarray:
        """q . (A x_j + id_j) for candidate items (id part 0 for items the model never saw): (n,)."""
        s = torch.from_numpy(np.asarray(X, np.float32)) @ self.search_vector(q)
        rows = self.id_rows(item_ids)
        if rows is not None:
            s = s + (self.ids.weight[rows.clamp(min=0)] @ q) * (rows >= 0)
        return s.numpy()

    @torch.no_grad()
    def unit_queries(self, X: np.ndarray, histories: list[list[int]], batch: int = 512) -> torch.Tensor:
        """Unit queries q for many histories of item indices into ``X``: (n, dim)."""
        out = torch.zeros((len(histories), self.config.dim))
        Xt = torch.from_numpy(np.asarray(X, np.float32))
        for s in range(0, len(histories), batch):
            hs = [h[-self.config.max_len:] for h in histories[s : s + batch]]
            idx, lengths = right_pad(hs)
            q = self(Xt[idx], idx if self.ids is not None else None)
            out[s : s + len(hs)] = q[torch.arange(len(hs)), lengths - 1]
        return out

    @torch.no_grad()
    def queries(self, X: np.ndarray, histories: list[list[int]]) -> np.ndarray:
        """Search vectors (A^T q) for FAISS over raw item vectors: (n, dim)."""
        return self.search_vector(self.unit_queries(X, histories)).numpy()

    @torch.no_grad()
    def scores(self, X: np.ndarray, histories: list[list[int]]) -> np.ndarray:
        """What training optimises: q . (A x_j [+ id_j]) for every item: (n, n_items)."""
        q = self.unit_queries(X, histories)
        return (q @ self.item_matrix(torch.from_numpy(np.asarray(X, np.float32))).T).numpy()


def right_pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, L) indices, 0 after each sequence's end, and (b,) lengths (all >= 1)."""
    if any(not s for s in seqs):
        raise ValueError("every sequence needs at least one item")
    L = max(len(s) for s in seqs)
    idx = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, s in enumerate(seqs):
        idx[r, : len(s)] = torch.as_tensor(s)
    return idx, torch.tensor([len(s) for s in seqs])


def save_sequence_model(model: SequenceModel, path: str | Path, meta: dict | None = None) -> Path:
    """float16 safetensors with the config (and any run facts) in the header."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"config": json.dumps(asdict(model.config)),
                                          "meta": json.dumps(meta or {})})
    return path


def load_sequence_model(path: str | Path) -> tuple[SequenceModel, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sequence model not found: {path}")
    with safe_open(str(path), "pt") as f:
        header = f.metadata() or {}
    if "config" not in header:
        raise ValueError(f"{path}: not an ecrec sequence model (no config in its header)")
    model = SequenceModel(SequenceConfig(**json.loads(header["config"])))
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    model.eval()
    meta = json.loads(header.get("meta", "{}"))
    model.vocab = {item: row for row, item in enumerate(meta.get("vocab", []))}
    return model, meta


def shipped_sequence_path(model: str = "e5-small") -> Path:
    return Path(__file__).parents[1] / "artifacts" / f"sequence_{model}.safetensors"


def warm_state(model: SequenceModel, source: SequenceModel, vocab: list[str]) -> dict:
    """``model``'s state with ``source``'s weights wherever the shapes agree, and the id rows of the
    items both know (``vocab``: ``model``'s id rows, in order) copied from ``source``: a fine-tune
    that starts from the serving model, over a catalog of its own."""
    state = model.state_dict()
    src = source.state_dict()
    for k, v in src.items():
        if k in state and k != "ids.weight" and state[k].shape == v.shape:
            state[k] = v.detach().clone()
    if model.ids is not None and source.ids is not None and source.vocab:
        ids = state["ids.weight"].clone()
        for row, item in enumerate(vocab):
            if item in source.vocab:
                ids[row] = src["ids.weight"][source.vocab[item]]
        state["ids.weight"] = ids
    return state


@torch.no_grad()
def catalog_scores(model: SequenceModel, X: np.ndarray, item_ids: list[str], histories: list[list[int]],
                   batch: int = 512) -> np.ndarray:
    """Every catalog item's score for each history, as serving ranks them (``query`` then
    ``item_scores``) but in batches: ``X`` and ``item_ids`` are the catalog in index order,
    histories are indices into it. The model's id rows are found through its vocabulary, so a model
    trained on another catalog is scored fairly (its unknown items read as text only). (n, n_items)"""
    rows = model.id_rows(item_ids)  # catalog index -> the model's id row, -1 if it never saw the item
    Xt = torch.from_numpy(np.asarray(X, np.float32))
    base = Xt @ model.item_map.weight.T  # (n_items, dim): A x
    if rows is not None:
        base = base + model.ids.weight[rows.clamp(min=0)] * (rows >= 0)[:, None]
    out = np.zeros((len(histories), len(item_ids)), np.float32)
    for s in range(0, len(histories), batch):
        hs = [h[-model.config.max_len:] for h in histories[s : s + batch]]
        idx, lengths = right_pad(hs)
        q = model(Xt[idx], rows[idx] if rows is not None else None)[torch.arange(len(hs)), lengths - 1]
        out[s : s + len(hs)] = (q @ base.T).numpy()
    return out
