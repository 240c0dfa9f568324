"""Slots by rules, in Chinese and English: order number, email, phone, amount, price filters, categories.

Rules, not a model: each slot has a shape a shop can name precisely, and a rule that is wrong is a
test that fails. Product mentions are found by brand and model words and resolved against
the catalog by the encoder (``ecrec.chat.products``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ecrec.text.language import HAN_CHARS

CATEGORIES_FILE = Path(__file__).parent.parent / "data" / "chat_categories.json"

EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])")
# Chinese mobile numbers (optionally +86), and international / North-American forms.
PHONE = re.compile(
    r"(?<![A-Za-z0-9+])(?:(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}"
    r"|\+\d{1,3}[\s-]?\(?\d{1,4}\)?(?:[\s-]?\d{2,4}){2,3}"
    r"|\(\d{3}\)\s?\d{3}[\s.-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![A-Za-z0-9-])")
_ORDER_WORDS = r"(?:订单编号|订单号码|订单号|单号|订单|order\s*(?:number|no\.?|id|#)?|#)"
ORDER_ANCHORED = re.compile(_ORDER_WORDS + r"\s*(?:是|为|:|：|#|is)?\s*([A-Za-z0-9][A-Za-z0-9-]{3,31})", re.I)
ORDER_BARE = re.compile(r"(?<![A-Za-z0-9@.+-])([A-Za-z]{0,4}-?\d[\d-]{4,22}\d)(?![A-Za-z0-9@-])")
ANY_ID = re.compile(r"(?<![A-Za-z0-9@.+-])([A-Za-z0-9][A-Za-z0-9-]{3,31})(?![A-Za-z0-9@-])")
LOOSE_PHONE = re.compile(r"(?<![\d+])(\+?\d[\d\s-]{8,16}\d)(?!\d)")
DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")
_UNIT_AFTER = re.compile(r"\s*(?:元|块|yuan|dollars?|usd|rmb|bucks)", re.I)
PHONE_WORDS = re.compile(r"电话|手机号|手机号码|联系方式|phone|mobile|cell|call me", re.I)

_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
# Bounded repeats and a look-behind keep these linear on a 1,000-digit message.
_NUM = (r"((?<![\d.,])(?:\d{1,3}(?:,\d{3}){1,4}|\d{1,12})(?:\.\d{1,2})?\s*[kK千万]?"
        r"|[零〇一二两三四五六七八九十百千万]{1,12})")
_CUR_BEFORE = r"(?:¥|￥|\$|rmb\s?|cny\s?|usd\s?)?"
_CUR_AFTER = rf"\s*(?:元|块钱|块(?![{HAN_CHARS}])|rmb|yuan|dollars?|usd|cny|bucks)?"
AMOUNT = re.compile(r"(?:(?:¥|￥|\$|rmb\s?|cny\s?|usd\s?)\s?" + _NUM + r"|" + _NUM
                    + rf"\s*(?:元|块钱|块(?![{HAN_CHARS}])|rmb|yuan|dollars?|usd|cny|bucks)(?![a-z]))", re.I)
_CURRENCY = re.compile(r"¥|￥|\$|元|块|rmb|cny|usd|yuan|dollar|bucks", re.I)
MIN_BARE_PRICE = 50  # a bound without a currency below this is a count or an age ("under 5"), not a price
_AMT = _CUR_BEFORE + r"\s?" + _NUM + _CUR_AFTER
PRICE_MAX = [re.compile(r"(?:under|below|less than|cheaper than|at most|up to|no more than|max(?:imum)?|within|<|≤)\s*"
                        + _AMT, re.I),
             re.compile(r"(?:不超过|(?<!不)低于|不到|少于|小于|最多|不高于|预算)\s*" + _AMT),
             re.compile(_AMT + r"\s*(?:以下|以内|之内|内|左右以内)")]
PRICE_MIN = [re.compile(r"(?:over|above|more than|at least|min(?:imum)?|>|≥)\s*" + _AMT, re.I),
             re.compile(r"(?:(?<!不)高于|(?<!不)超过|不低于|至少|大于)\s*" + _AMT),
             re.compile(_AMT + r"\s*(?:以上|起)")]
PRICE_RANGE = [re.compile(r"between\s*" + _AMT + r"\s*and\s*" + _AMT, re.I),
               re.compile(_AMT + r"\s*(?:-|~|～|到|至|to)\s*" + _AMT, re.I)]


def parse_number(s: str) -> float | None:
    """"2000", "2.5k", "3千", "两千五", "一万" -> a float (None when it is not a number)."""
    s = s.strip().replace(",", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kK千万]?)", s)
    if m:
        return float(m.group(1)) * {"": 1, "k": 1000, "K": 1000, "千": 1000, "万": 10000}[m.group(2)]
    if not s or any(ch not in _ZH_DIGITS and ch not in _ZH_UNITS for ch in s):
        return None
    total, section, digit, last_unit = 0, 0, None, 1
    for ch in s:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        else:
            unit = _ZH_UNITS[ch]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section, digit, last_unit = 0, None, 10000
            else:
                section += (1 if digit is None else digit) * unit
                digit, last_unit = None, unit
    if digit is not None:  # "两千五" = 2500: a trailing digit counts in the next unit down
        section += digit * (last_unit // 10 if last_unit >= 100 and len(s) > 1 and s[-2] in _ZH_UNITS else 1)
    return float(total + section)


@dataclass(frozen=True)
class PriceRange:
    min_price: float | None = None
    max_price: float | None = None

    def __bool__(self) -> bool:
        return self.min_price is not None or self.max_price is not None


def price_range(text: str) -> PriceRange:
    """Price bounds a shopper states: "under 2000", "2000以下", "1000到3000", "500元以上". A bound with
    no currency under ``MIN_BARE_PRICE`` is not one ("within 3 days", "2 to 3 shirts")."""
    def value(m, group: int) -> float | None:
        v = parse_number(m.group(group))
        if v is None or v > 1e9:
            return None
        return v if v >= MIN_BARE_PRICE or _CURRENCY.search(m.group(0)) else None

    for pat in PRICE_RANGE:
        m = pat.search(text)
        if m:
            a, b = value(m, 1), value(m, 2)
            if a is not None and b is not None:
                return PriceRange(min(a, b), max(a, b))
    lo = hi = None
    for pat in PRICE_MAX:
        m = pat.search(text)
        if m and (v := value(m, 1)) is not None:
            hi = v
            break
    for pat in PRICE_MIN:
        m = pat.search(text)
        if m and (v := value(m, 1)) is not None:
            lo = v
            break
    if lo is not None and hi is not None and lo > hi:
        lo = None
    return PriceRange(lo, hi)


@lru_cache(maxsize=1)
def _category_words() -> dict[str, list[str]]:
    return json.loads(CATEGORIES_FILE.read_text(encoding="utf-8"))


def categories(text: str, known: frozenset[str] | set[str] | None = None) -> list[str]:
    """Catalog categories the message names ("手机" -> phones, "camera" -> cameras), limited to
    ``known`` (the catalog's own) when given. English words match whole words, plurals included."""
    low = text.lower()
    found = []
    for cat, words in _category_words().items():
        if known is not None and cat not in known:
            continue
        for w in words:
            hit = (re.search(rf"\b{re.escape(w.lower())}(?:e?s)?\b", low) if w.isascii() else w in text)
            if hit and not _excluded(text, w):
                found.append(cat)
                break
    return found


def _excluded(text: str, word: str) -> bool:
    """"手机号" (a phone number) is not a phone the shopper wants to buy."""
    return word == "手机" and re.sub(r"手机号码?", "", text).count("手机") == 0


@dataclass
class Slots:
    order_id: str | None = None
    email: str | None = None
    phone: str | None = None
    amount: float | None = None
    extras: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {k: v for k, v in (("order_id", self.order_id), ("email", self.email), ("phone", self.phone),
                                 ("amount", self.amount)) if v is not None}
        out.update(self.extras)
        return out


def _digits(s: str) -> int:
    return sum(ch.isdigit() for ch in s)


def _is_order_id(token: str, after: str, min_digits: int) -> bool:
    """Not a date, not a price (a currency follows), and enough digits."""
    return _digits(token) >= min_digits and not DATE.match(token) and not _UNIT_AFTER.match(after)


def extract(text: str, expecting: str | None = None) -> Slots:
    """Every slot the message holds. ``expecting`` (the slot the bot just asked for) widens what a
    bare token may be: after "what is your order number?", "123456" or "ABC-1234" is one; after
    "your email or phone?", a 10-digit number or "415 555 2671" is a phone number."""
    out = Slots()
    m = EMAIL.search(text)
    if m:
        out.email = m.group(0)
    rest = EMAIL.sub(" ", text)
    anchored = ORDER_ANCHORED.search(rest)
    if anchored and _is_order_id(anchored.group(1), rest[anchored.end():anchored.end() + 8], 4):
        out.order_id = anchored.group(1).upper()
        rest = rest.replace(anchored.group(1), " ")
    phone = PHONE.search(rest)
    if phone:
        ph = phone.group(0)
        # a bare 11-digit number is a phone only when the message says so, or none is pending
        if PHONE_WORDS.search(rest) or expecting in (None, "contact") or not re.fullmatch(r"\d+", ph):
            out.phone = re.sub(r"[\s-]", "", ph) if re.fullmatch(r"[\d\s+-]+", ph) else ph
            rest = rest.replace(ph, " ")
    if out.phone is None and out.email is None and expecting == "contact":
        m = LOOSE_PHONE.search(rest)
        if m and 10 <= _digits(m.group(1)) <= 13:
            out.phone = re.sub(r"[\s-]", "", m.group(1))
            rest = rest.replace(m.group(1), " ")
    if out.order_id is None:
        pattern, need = (ANY_ID, 4) if expecting == "order_id" else (ORDER_BARE, 6)
        for m in pattern.finditer(rest):
            if _is_order_id(m.group(1), rest[m.end():m.end() + 8], need):
                out.order_id = m.group(1).upper()
                rest = rest.replace(m.group(1), " ")
                break
    m = AMOUNT.search(rest)
    if m:
        v = parse_number(m.group(1) or m.group(2))
        out.amount = v if v is not None and v <= 1e9 else None
    return out
