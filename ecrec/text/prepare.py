"""Text preparation: normalisation, limits and clause splitting (zh + en); the language of a text
is ``ecrec.text.language``'s."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_CHARS = 2000  # longer texts are truncated (and flagged); an encoder sees ~512 tokens anyway
MAX_CLAUSES = 16  # clauses past this are merged into the last one: one text costs at most 17 encoder rows

_CONTROL = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\ufeff]")
_SPACE = re.compile(r"\s+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# Sentence ends split hard; contrast markers start a new clause (the marker stays with it).
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])|(?<=[.])(?=\s)")
_ZH_CONTRAST = r"但是|但|不过|可是|然而|只是"
_EN_CONTRAST = r"\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\byet\b|\bwhereas\b"
_CONTRAST = re.compile(rf"[，,、]?\s*(?<!不)(?=(?:{_ZH_CONTRAST}|{_EN_CONTRAST}))", re.IGNORECASE)
_EDGE_PUNCT = " ，,、。.!！?？;；:：~～"
# A concessive clause ("although X, Y" / "虽然X，Y") ends at its first comma.
_CONCESSIVE = re.compile(r"^((?:although|though|even though|虽然|尽管|虽说)[^,，]+)[,，](.+)$", re.I)


class TextError(ValueError):
    """Raised for text that cannot be used (empty, whitespace only, not a string)."""


@dataclass(frozen=True)
class CleanText:
    text: str
    truncated: bool
    original_length: int


def clean(text: object, max_chars: int = MAX_CHARS) -> CleanText:
    """NFKC-normalise, drop control/zero-width characters, collapse whitespace, cap length.

    Raises:
        TextError: when ``text`` is not a string or nothing is left after cleaning.
    """
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    if _SURROGATE.search(text):
        raise TextError("text contains a lone UTF-16 surrogate (not valid Unicode)")
    original = len(text)
    # Cap before the expensive steps so a 1 MB body costs little.
    text = text[: max_chars * 4]
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    if not text:
        raise TextError("text is empty or only whitespace/control characters")
    truncated = len(text) > max_chars or original > max_chars * 4
    return CleanText(text[:max_chars].rstrip(), truncated, original)


def split_clauses(text: str, min_chars: int = 2, max_clauses: int = MAX_CLAUSES) -> list[str]:
    """Split into sentences, then at contrast markers (但/但是/不过/可是, but/however/although).

    "这款手机拍照效果很好，但电池续航不太理想" -> ["这款手机拍照效果很好", "但电池续航不太理想"].
    Pieces shorter than ``min_chars`` (after trimming punctuation) are merged into the previous one,
    and pieces past ``max_clauses`` into the last clause, so a long review cannot fan out into
    hundreds of encoder rows.
    """
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        pieces = []
        for piece in _CONTRAST.split(sentence):
            m = _CONCESSIVE.match(piece.strip(_EDGE_PUNCT))
            pieces.extend(m.groups() if m else [piece])
        for piece in pieces:
            piece = piece.strip(_EDGE_PUNCT)
            if not piece:
                continue
            if len(piece) < min_chars and out:
                out[-1] = out[-1] + " " + piece
            else:
                out.append(piece)
    if len(out) > max_clauses:
        out = out[: max_clauses - 1] + [" ".join(out[max_clauses - 1 :])]
    return out or [text.strip(_EDGE_PUNCT) or text]


def encoder_rows(text: str) -> int:
    """Rows one text costs the encoder: the text itself, plus its clauses when there are several."""
    n = len(split_clauses(clean(text).text))
    return 1 + (n if n > 1 else 0)
