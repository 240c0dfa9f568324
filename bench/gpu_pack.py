"""Carry e5-small and the sentiment data to a lent GPU machine, inside its 64 MiB working-tree limit.

    python bench/gpu_pack.py pack --out .gpu            # here: ~55 MB in .gpu/ (git-ignored)
    python bench/gpu_pack.py unpack .gpu /tmp/home      # there: $ECREC_HOME=/tmp/home, data in /tmp/home/data

The built e5 folder is 470 MB, mostly its 250,037 x 384 word embeddings. The pack keeps only the
vocabulary that the shared sentiment data tokenizes to (about 26k pieces): the tokenizer keeps those
pieces in their old order (removing pieces no text's best segmentation uses cannot change any of
those segmentations; `pack` checks every text), the embeddings keep their rows, stored as int8 with
a per-row scale (they are frozen in fine-tuning; the round trip moves a sentence vector by < 1e-3
cosine, printed by `pack`). The transformer layers travel in float16. A branch trained on the pack
loads on the full model: branches hold transformer layers and a head, never embeddings.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np

EMB = "embeddings.word_embeddings.weight"
DATA_FILES = ("marc_zh_train.csv", "marc_zh_test.csv", "marc_en_train.csv", "marc_en_test.csv",
              "online_shopping_10_cats.csv")
EXTRA_TEXTS = ("这款手机拍照效果很好，但电池续航不太理想", "Noise cancelling is superb on flights.",
               "还行吧，一般般", "一般般吧，凑合用，没有想象中好也没有很差", "It's okay I guess")


def _texts(data_dir: Path) -> list[str]:
    from ecrec.text.prepare import clean, split_clauses
    from ecrec.learning.datasets import load_marc, load_online_shopping_categories

    raw = [t for lang in ("zh", "en") for split in ("train", "test") for t in load_marc(data_dir, lang, split)[0]]
    raw += load_online_shopping_categories(data_dir)[0] + list(EXTRA_TEXTS)
    out = []
    for t in raw:
        c = clean(t).text
        out.append("query: " + c)
        out += ["query: " + s for s in split_clauses(c)]  # the clause rows the analyzer encodes
    return out


def pack(model_dir: Path, data_dir: Path, out: Path) -> None:
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer

    full = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    texts = _texts(data_dir)
    encoded = [e for s in range(0, len(texts), 4000) for e in full.encode_batch(texts[s:s + 4000])]
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    specials = [t["id"] for t in spec["added_tokens"]]
    kept = np.array(sorted(set(specials).union(*(e.ids for e in encoded))))
    new_id = {int(old): new for new, old in enumerate(kept)}
    spec["model"]["vocab"] = [spec["model"]["vocab"][i] for i in kept]
    spec["model"]["unk_id"] = new_id[spec["model"]["unk_id"]]
    for t in spec["added_tokens"]:
        t["id"] = new_id[t["id"]]
    for t in spec["post_processor"]["special_tokens"].values():
        t["ids"] = [new_id[i] for i in t["ids"]]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    pruned = Tokenizer.from_file(str(out / "tokenizer.json"))
    for s in range(0, len(texts), 4000):
        for e, p in zip(encoded[s:s + 4000], pruned.encode_batch(texts[s:s + 4000])):
            if p.ids != [new_id[i] for i in e.ids]:
                raise SystemExit(f"pruned tokenizer differs on {e.tokens} vs {p.tokens}")
    weights = load_file(str(model_dir / "model.safetensors"))
    emb = weights.pop(EMB)[kept].astype(np.float32)
    scale = np.abs(emb).max(1, keepdims=True) / 127.0
    q = np.round(emb / scale).astype(np.int8)
    np.savez(out / "embeddings.npz", q=q, scale=scale.astype(np.float32))
    save_file({k: v.astype(np.float16) for k, v in weights.items()}, str(out / "layers.safetensors"))
    config = json.loads((model_dir / "config.json").read_text())
    config["vocab_size"] = len(kept)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer_config.json", "ecrec_build.json"):
        shutil.copy(model_dir / name, out / name)
    with tarfile.open(out / "sentiment.tar.xz", "w:xz") as tar:
        for name in DATA_FILES:
            tar.add(data_dir / "sentiment" / name, arcname=f"sentiment/{name}")
    print(f"{len(texts)} texts, {len(kept)} of {full.get_vocab_size()} pieces kept; "
          f"all tokenize identically")
    _check(model_dir, out, texts[:64])
    for p in sorted(out.iterdir()):
        print(f"  {p.name}: {p.stat().st_size / 1e6:.1f} MB")


def unpack(pack_dir: Path, home: Path) -> Path:
    """The pack as an ecrec model folder under ``home`` (float32) and the data in ``home/data``."""
    from safetensors.numpy import load_file, save_file

    model = home / "models" / "multilingual-e5-small"
    model.mkdir(parents=True, exist_ok=True)
    weights = {k: v.astype(np.float32) for k, v in load_file(str(pack_dir / "layers.safetensors")).items()}
    z = np.load(pack_dir / "embeddings.npz")
    weights[EMB] = z["q"].astype(np.float32) * z["scale"]
    save_file(weights, str(model / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "ecrec_build.json"):
        shutil.copy(pack_dir / name, model / name)
    with tarfile.open(pack_dir / "sentiment.tar.xz") as tar:
        tar.extractall(home / "data", filter="data")
    return model


def _check(model_dir: Path, pack_dir: Path, texts: list[str]) -> None:
    """Sentence vectors of the full model against the unpacked one (int8 rows, fp16 layers), both
    through ``TextEncoder`` on the CPU. ``texts`` carry their ``query:`` prefix: the encoder adds it."""
    import tempfile

    from ecrec.text.encoder import EncoderConfig, TextEncoder

    raw = [t.removeprefix("query: ") for t in texts]

    def vectors(folder: Path) -> np.ndarray:
        config = EncoderConfig(model_dir=folder, device="cpu", align_languages=False)
        return TextEncoder(config).encode(raw, "query", align=False)

    with tempfile.TemporaryDirectory() as d:
        cos = (vectors(model_dir) * vectors(unpack(pack_dir, Path(d)))).sum(1)
    print(f"sentence vectors, full vs packed: cosine min {cos.min():.5f}, mean {cos.mean():.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--model-dir", type=Path, default=None, help="built e5 folder (default: $ECREC_HOME's)")
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p = sub.add_parser("unpack")
    p.add_argument("pack_dir", type=Path)
    p.add_argument("home", type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        from ecrec.text.encoder import EncoderConfig, resolve_model_dir

        pack(args.model_dir or resolve_model_dir(EncoderConfig()), args.data, args.out)
    else:
        print(unpack(args.pack_dir, args.home))


if __name__ == "__main__":
    main()
