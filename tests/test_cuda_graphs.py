"""Static-shape CUDA graphs of the encoder (ecrec.text.cuda_graphs): the padding and bucketing run
on CPU here with a tiny random BERT; the graphed-vs-eager check runs where there is a GPU."""
import copy

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizerFast

from ecrec.text.classifier import Branch, layer_mask, run_layer, trunk_forward
from ecrec.text.cuda_graphs import (GraphRunner, batch_buckets, bucket, forward_all, length_buckets, pad_batch,
                                    static_mask)
from ecrec.text.encoder import EncoderConfig, TextEncoder

TEXTS = ["这款手机拍照效果很好，但电池续航不太理想", "good camera", "电池 bad", "a b c d e f g h i j k l m n o p q r",
         "好", "phone case 手机壳 很好 good good"]


def _tiny_folder(path, attn="sdpa"):
    chars = sorted(set("".join(TEXTS).replace(" ", "")))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "camera", "bad", "phone", "case", *chars]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, attn_implementation=attn)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(path))
    return path


def _branch(model, k, n_labels, seed):
    torch.manual_seed(seed)
    layers = nn.ModuleList(copy.deepcopy(model.encoder.layer[model.config.num_hidden_layers - k:]))
    for p in layers.parameters():
        p.data.add_(0.05 * torch.randn_like(p))  # a fine-tuned copy, not the trunk's own layers
    return Branch(layers, model.config.hidden_size, n_labels, dropout=0.0).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = _tiny_folder(tmp_path_factory.mktemp("tiny-bert"))
    enc = TextEncoder(EncoderConfig(model="minilm", model_dir=folder, device="cpu", batch_size=4, max_length=24,
                                    align_languages=False))
    return enc, [_branch(enc.model, 2, 3, 1), _branch(enc.model, 1, 5, 2)]


def _padded(enc):
    """The encoder running the graphs' padded path eagerly (what a graph replays), same weights."""
    other = copy.copy(enc)
    other.graphs = GraphRunner(enc.model, enc.tokenizer.pad_token_id, batch_buckets(enc.config.batch_size),
                               length_buckets(enc.config.max_length), capture=False)
    return other


def test_buckets():
    assert batch_buckets(1) == (1,) and batch_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert length_buckets(128) == (16, 32, 64, 128) and length_buckets(100) == (16, 32, 64, 100)
    assert length_buckets(8) == (8,) and length_buckets(512)[-2:] == (256, 512)
    assert [bucket(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    assert [bucket(n, (16, 32, 64, 128)) for n in (3, 16, 17, 100)] == [16, 16, 32, 128]
    with pytest.raises(ValueError):
        bucket(9, (1, 2, 4, 8))


def test_pad_batch():
    ids = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    pi, pm = pad_batch(ids, mask, 4, 6, pad_id=0)
    assert pi.shape == pm.shape == (4, 6) and pi.dtype == ids.dtype
    assert torch.equal(pi[:2, :4], ids) and torch.equal(pm[:2, :4], mask)
    assert (pi[:, 4:] == 0).all() and (pm[:2, 4:] == 0).all()
    assert (pi[2:] == 0).all() and pm[2:].tolist() == [[1, 0, 0, 0, 0, 0]] * 2  # filler rows: one pad token
    with pytest.raises(ValueError):
        pad_batch(ids, mask, 1, 6, 0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_owned_mask_gives_the_models_own_forward(tmp_path, attn):
    """Our mask and keyword layer calls give what ``BertModel.forward`` (public) gives on a padded
    batch, for both attention kernels; the graphs' static mask gives the same as ``layer_mask``."""
    model = BertModel.from_pretrained(str(_tiny_folder(tmp_path, attn))).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0], [2, 9, 9, 5, 3]])
    a = (ids != 0).long()
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=a).last_hidden_state
        h, mask = trunk_forward(model, ids, a, model.config.num_hidden_layers)
        h_static = model.embeddings(input_ids=ids)
        for layer in model.encoder.layer:
            h_static = run_layer(layer, h_static, static_mask(model, a, h_static))
    keep = a.bool()
    assert mask is not None and mask.shape == (3, 1, 1, 5)
    torch.testing.assert_close(h[keep], want[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_static[keep], want[keep], rtol=1e-5, atol=1e-5)
    assert layer_mask(model, torch.ones_like(a), h) is None  # nothing to mask
    assert static_mask(model, torch.ones_like(a), h) is not None  # materialised even without padding


def test_padding_to_buckets_changes_nothing(tiny):
    enc, branches = tiny
    ids = enc.tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.inference_mode():
        plain = forward_all(enc.model, ids["input_ids"], ids["attention_mask"], branches)
        padded = forward_all(enc.model, *pad_batch(ids["input_ids"], ids["attention_mask"], 4, 32, 0), branches)
    assert plain.shape == (3, enc.dim + 3 + 5) and torch.isfinite(padded).all()
    torch.testing.assert_close(padded[:3], plain, rtol=1e-5, atol=1e-5)


def test_padded_path_matches_the_eager_encoder(tiny):
    enc, branches = tiny
    padded = _padded(enc)
    np.testing.assert_allclose(padded.encode(TEXTS), enc.encode(TEXTS), atol=1e-5)
    rows = [None, 2]  # the second branch on the first two texts only, like intents of whole texts
    x0, l0 = enc.encode_with_branches(TEXTS, "query", branches, rows)
    x1, l1 = padded.encode_with_branches(TEXTS, "query", branches, rows)
    np.testing.assert_allclose(x1, x0, atol=1e-5)
    for a, b in zip(l1, l0):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.isnan(l0[1][2:]).all() and not np.isnan(l0[1][:2]).any()


def test_no_graphs_on_cpu(tiny):
    enc, _ = tiny
    assert enc.config.cuda_graphs and enc.graphs is None
    with pytest.raises(ValueError):
        GraphRunner(enc.model, 0, (1,), (16,), capture=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphed_matches_eager_on_cuda(tmp_path):
    folder = _tiny_folder(tmp_path)
    cfg = EncoderConfig(model="minilm", model_dir=folder, device="cuda", batch_size=8, max_length=24,
                        align_languages=False)
    graphed = TextEncoder(cfg)
    assert graphed.graphs is not None
    eager = copy.copy(graphed)
    eager.graphs = None
    branches = [_branch(graphed.model, 2, 3, 1).to("cuda", graphed.dtype),
                _branch(graphed.model, 1, 5, 2).to("cuda", graphed.dtype)]
    for texts in (TEXTS[:1], TEXTS):
        for _ in range(2):  # the second call replays the graphs captured by the first
            x1, l1 = graphed.encode_with_branches(texts, "query", branches, [None, 1])
        x0, l0 = eager.encode_with_branches(texts, "query", branches, [None, 1])
        assert ((x0 * x1).sum(1) > 0.999).all()
        for a, b in zip(l1, l0):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), atol=5e-2)
    assert graphed.graphs.captures >= 2 and all(g is not None for g in graphed.graphs.graphs.values())
