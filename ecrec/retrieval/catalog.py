"""Items and catalog loaders (JSONL/JSON, CSV, Parquet, UniSRec ``.text``, RecBole ``.item``)."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Annotated, Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEMO_CATALOG = Path(__file__).parents[1] / "data" / "demo_catalog.jsonl"


class Item(BaseModel):
    """One product. ``category`` is a path, most general first: ``["phones", "flagship"]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    title: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=5000)
    category: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=8)
    brand: str = Field(default="", max_length=200)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=50)
    attributes: dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=dict, max_length=50)
    price: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    rating: float = Field(default=0.0, ge=0, le=5, allow_inf_nan=False)
    stock: int = Field(default=1, ge=0)
    language: str = Field(default="en", max_length=16)
    created_at: float = Field(default_factory=time.time, allow_inf_nan=False)
    rebuyable: bool = False  # consumables may be recommended again after purchase

    @field_validator("id", "title")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()

    @property
    def top_category(self) -> str:
        return self.category[0] if self.category else ""

    def embedding_text(self) -> str:
        """The text an item is embedded from: the fields a shopper's words refer to."""
        parts = [self.title]
        if self.brand:
            parts.append(self.brand)
        if self.category:
            parts.append(" / ".join(self.category))
        if self.tags:
            parts.append(", ".join(self.tags))
        if self.attributes:
            parts.append(", ".join(f"{k}: {v}" for k, v in self.attributes.items()))
        if self.description:
            parts.append(self.description)
        return ". ".join(p.strip() for p in parts if p.strip())


def _rows_to_items(rows: Iterable[dict], source: str) -> list[Item]:
    items = []
    for n, row in enumerate(rows, 1):
        row = {k: v for k, v in row.items() if v not in (None, "")}
        for key in ("category", "tags"):
            if isinstance(row.get(key), str):
                sep = "/" if key == "category" else ","
                row[key] = [p.strip() for p in row[key].split(sep) if p.strip()]
        if isinstance(row.get("attributes"), str):
            row["attributes"] = json.loads(row["attributes"])
        try:
            items.append(Item(**row))
        except Exception as e:  # pydantic ValidationError names the field
            raise ValueError(f"{source}: row {n}: {e}") from e
    return items


def load_catalog(path: str | Path) -> list[Item]:
    """Load items by file suffix. Unknown suffixes and malformed rows raise ``ValueError``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"catalog not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif suffix == ".text":
        return load_unisrec_text(path)
    elif suffix == ".item":
        return load_recbole_item(path)
    else:
        raise ValueError(f"{path}: unknown catalog format {suffix!r}")
    items = _rows_to_items(rows, str(path))
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate item ids")
    return items


def _atomic_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """RecBole atomic file: tab-separated, header ``name:type``."""
    with path.open(encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return header, rows


def load_unisrec_text(path: str | Path) -> list[Item]:
    """UniSRec ``<dataset>.text``: ``item_id \\t text`` (title. categories. brand.)."""
    header, rows = _atomic_rows(Path(path))
    items = []
    for row in rows:
        item_id, text = row[0], (row[1] if len(row) > 1 else "")
        title = text.split(". ")[0].strip() or item_id
        items.append(Item(id=item_id, title=title[:500], description=text[:5000], created_at=0.0))
    return items


def load_recbole_item(path: str | Path) -> list[Item]:
    """RecBole ``.item``: ``item_id`` plus text columns (title, categories, brand, ...)."""
    header, rows = _atomic_rows(Path(path))
    if "item_id" not in header:
        raise ValueError(f"{path}: no item_id column in {header}")
    items = []
    for row in rows:
        rec = dict(zip(header, row))
        item_id = rec.pop("item_id")
        title = rec.pop("title", "") or item_id
        cats = rec.pop("categories", "")
        brand = rec.pop("brand", "")
        price = rec.pop("price", "")
        desc = " ".join(v for v in rec.values() if v)
        items.append(Item(
            id=item_id, title=title[:500], description=desc[:5000], brand=brand[:200],
            category=[c.strip()[:100] for c in cats.split(",") if c.strip()][:8],
            price=float(price) if price.replace(".", "", 1).isdigit() else 0.0, created_at=0.0,
        ))
    return items


def load_demo_catalog() -> list[Item]:
    return load_catalog(DEMO_CATALOG)
