import json

import pytest

from ecrec.retrieval.catalog import Item, load_catalog, load_recbole_item, load_unisrec_text


def test_demo_catalog_is_big_and_bilingual(demo_items):
    assert len(demo_items) >= 300
    cats = {it.top_category for it in demo_items}
    assert len(cats) >= 10
    langs = {it.language for it in demo_items}
    assert langs == {"zh", "en"}
    assert len({it.id for it in demo_items}) == len(demo_items)
    assert all(it.price > 0 and 0 < it.rating <= 5 for it in demo_items)
    assert any("拍照" in it.tags for it in demo_items) and any("battery life" in it.tags for it in demo_items)


def test_embedding_text_uses_the_fields():
    it = Item(id="x", title="T", brand="B", category=["phones", "camera"], tags=["拍照"],
              attributes={"卖点": "夜景"}, description="D")
    assert it.embedding_text() == "T. B. phones / camera. 拍照. 卖点: 夜景. D"


def test_loaders_roundtrip(tmp_path, demo_items):
    rows = [json.loads(it.model_dump_json()) for it in demo_items[:20]]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    (tmp_path / "c.json").write_text(json.dumps(rows, ensure_ascii=False))
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = [{**r, "attributes": json.dumps(r["attributes"], ensure_ascii=False)} for r in rows]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "c.parquet")
    import csv

    with (tmp_path / "c.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "category": "/".join(r["category"]), "tags": ",".join(r["tags"]),
                        "attributes": json.dumps(r["attributes"], ensure_ascii=False)})
    for name in ("c.jsonl", "c.json", "c.parquet", "c.csv"):
        assert load_catalog(tmp_path / name) == demo_items[:20], name


def test_unisrec_and_recbole_formats(tmp_path):
    (tmp_path / "x.text").write_text("item_id:token\ttext:token_seq\nB01\tSanding Roll. Industrial. PORTER. \n")
    items = load_unisrec_text(tmp_path / "x.text")
    assert items[0].id == "B01" and items[0].title == "Sanding Roll"
    (tmp_path / "x.item").write_text(
        "item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\tprice:float\n"
        "7\tGuitar strings\tMusic,Strings\tAcme\t9.5\n")
    items = load_recbole_item(tmp_path / "x.item")
    assert (items[0].id, items[0].category, items[0].brand, items[0].price) == \
        ("7", ["Music", "Strings"], "Acme", 9.5)


def test_scientific_text_loads(data_dir):
    items = load_catalog(data_dir / "recsys" / "amazon_scientific" / "Scientific.text")
    assert len(items) == 4385


@pytest.mark.parametrize("row,field", [
    ({"id": "", "title": "t"}, "id"), ({"id": "a", "title": "t", "price": -1}, "price"),
    ({"id": "a", "title": "t", "rating": 7}, "rating"), ({"id": "a", "title": "t", "colour": 1}, "colour"),
])
def test_bad_items_name_the_field(tmp_path, row, field):
    (tmp_path / "bad.jsonl").write_text(json.dumps(row))
    with pytest.raises(ValueError, match=field):
        load_catalog(tmp_path / "bad.jsonl")
