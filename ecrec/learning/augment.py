"""Text augmentation for short customer-service utterances (zh and en), deterministic under a seed.

Noise a shopper really makes: a dropped or swapped character or word, a homophone typo
(在/再, 账/帐, 订/定), punctuation added or lost, and a change of register (a polite opener,
an impatient tail). Used to stretch the project's Chinese intent utterances so a classifier
learns the request, not the exact wording.
"""
from __future__ import annotations

import random
import re

from ecrec.text.language import is_chinese

ZH_TYPOS = {"在": "再", "再": "在", "的": "得", "账": "帐", "帐": "账", "订": "定", "吗": "嘛", "么": "嘛",
            "登录": "登陆", "收货": "收获", "已经": "以经", "怎么": "咋", "什么": "啥", "一下": "一哈",
            "退款": "退kuan", "物流": "wuliu"}
ZH_OPENERS = ["您好，", "你好，", "亲，", "请问", "麻烦问下，", "在吗？", "客服，", "急！", "喂，", "hi，"]
ZH_TAILS = ["", "？", "？？？", "！", "，谢谢", "，急", "，谢谢啦", "啊", "呀", "。", "🙏", "，快点"]
EN_OPENERS = ["hi, ", "hello ", "please ", "hey, ", "excuse me, ", "", "um ", "quick question: "]
EN_TAILS = ["", "?", "??", "!", " please", " thanks", " asap", "."]
_PUNCT = re.compile(r"[，。！？、,.!?~～…]+")


def _zh_variant(text: str, rng: random.Random) -> str:
    ops = rng.sample(["typo", "drop", "swap", "punct", "register"], k=rng.choice([1, 2]))
    t = text
    for op in ops:
        if op == "typo":
            keys = [k for k in ZH_TYPOS if k in t]
            if keys:
                k = rng.choice(keys)
                t = t.replace(k, ZH_TYPOS[k], 1)
        elif op == "drop" and len(t) > 4:
            i = rng.randrange(len(t))
            if not t[i].isdigit():
                t = t[:i] + t[i + 1:]
        elif op == "swap" and len(t) > 4:
            i = rng.randrange(len(t) - 1)
            if not (t[i].isdigit() or t[i + 1].isdigit()):
                t = t[:i] + t[i + 1] + t[i] + t[i + 2:]
        elif op == "punct":
            t = _PUNCT.sub(" ", t).strip() if rng.random() < 0.5 else t.rstrip("？?。!！") + rng.choice(ZH_TAILS)
        elif op == "register":
            t = rng.choice(ZH_OPENERS) + t if rng.random() < 0.5 else t + rng.choice(ZH_TAILS)
    return t.strip() or text


def _en_variant(text: str, rng: random.Random) -> str:
    words = text.split()
    op = rng.choice(["drop", "swap", "typo", "case", "register"])
    if op == "drop" and len(words) > 3:
        del words[rng.randrange(len(words))]
    elif op == "swap" and len(words) > 3:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif op == "typo":
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 3:
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif op == "case":
        return text.lower().rstrip("?.!")
    else:
        return rng.choice(EN_OPENERS) + text.rstrip("?.!") + rng.choice(EN_TAILS)
    return " ".join(words) or text


def variants(text: str, n: int, seed: int = 0) -> list[str]:
    """Up to ``n`` distinct noisy variants of ``text`` (never the text itself)."""
    rng = random.Random(f"{seed}|{text}")
    make = _zh_variant if is_chinese(text) else _en_variant
    out: list[str] = []
    for _ in range(4 * n):
        v = make(text, rng)
        if v != text and v not in out:
            out.append(v)
        if len(out) == n:
            break
    return out
