"""Catalog, content, product-page and storefront routes of the ingress: an ``APIRouter`` of plain
functions, which receive what they use, declared by ``CatalogServices``, through
``Depends(services)`` (the app factory, ``http_app.build_http_app``, says why)."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from deployments import schemas as s
from deployments.config import AppArgs
from deployments.http_app import ApiError, services
from ecrec.operations.security import Gate

router = APIRouter()


class CatalogServices(Protocol):
    """What the catalog routes use of the ingress (``deployments.ingress.Ingress`` provides it)."""

    args: AppArgs
    board: Any  # the CatalogBoard actor: the catalog's writes
    gate: Gate | None  # the API keys its guards check (None: no keys, every route open)

    @property
    def retriever(self) -> Any: ...
    async def encoder_call(self, method: str, *args): ...
    def remote_profile(self, user_id: str | None) -> Any: ...


_STATIC_TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8"}
# The page loads only its own files and calls only this origin.
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _static(name: str):
    """The storefront's files (``ecrec/storefront``), by an allow-list of names."""
    from pathlib import Path

    from fastapi.responses import Response

    import ecrec

    if name not in _STATIC_TYPES:
        raise ApiError(404, f"no static file {name!r}")
    # the installed package's files, wherever this shell runs from
    path = Path(ecrec.__file__).resolve().parent / "storefront" / name
    return Response(path.read_bytes(), media_type=_STATIC_TYPES[name], headers=_PAGE_HEADERS)


@router.put("/v1/items/{item_id}")
async def put_item(item_id: str, body: s.ItemIn, svc: CatalogServices = Depends(services)) -> dict:
    from ecrec.retrieval.catalog import Item

    fields = body.model_dump(exclude_none=True)
    item = Item(id=item_id, **fields)
    [vec] = await svc.encoder_call("embed_passages", [item.embedding_text()])
    seq = await svc.board.put.remote(item.model_dump_json(), vec)
    return {"item": json.loads(item.model_dump_json()), "seq": seq,
            "propagation": f"all replicas within {svc.args.sync_interval_s:.1f}s"}


@router.get("/v1/items/{item_id}")
async def get_item(item_id: str, svc: CatalogServices = Depends(services)) -> dict:
    item = await svc.retriever.get_item.remote(item_id)
    if item is None:
        raise ApiError(404, f"unknown item id {item_id!r}")
    return json.loads(item.model_dump_json())


@router.delete("/v1/items/{item_id}")
async def delete_item(item_id: str, svc: CatalogServices = Depends(services)) -> dict:
    if await svc.retriever.get_item.remote(item_id) is None:
        raise ApiError(404, f"unknown item id {item_id!r}")
    seq = await svc.board.delete.remote(item_id)
    return {"item_id": item_id, "deleted": True, "seq": seq}


@router.get("/v1/items", response_model=s.ItemPageOut)
async def list_items(category: str | None = Query(None, max_length=100), k: int = Query(24, ge=1, le=100),
                     offset: int = Query(0, ge=0), svc: CatalogServices = Depends(services)) -> dict:
    """A page of the catalog (a storefront's grid), optionally one top category."""
    total, items = await svc.retriever.list_items.remote(category, k, offset)
    return JSONResponse({"total": total, "items": items})


@router.get("/v1/items/{item_id}/related", response_model=s.RelatedOut, response_model_exclude_none=True)
async def related(item_id: str, kind: Literal["content", "product"] = "content",
                  k: int = Query(4, ge=1, le=50), language: str | None = Query(None, pattern=r"^[a-z]{2}$"),
                  explain: bool = False, svc: CatalogServices = Depends(services)) -> dict:
    """For a product page: guides about the item (or its nearest), or similar products."""
    items = await svc.retriever.related.remote(item_id, kind, k, language, explain)
    if items is None:
        raise ApiError(404, f"unknown item id {item_id!r}")
    return JSONResponse({"item_id": item_id, "kind": kind, "items": items})


@router.get("/v1/users/{user_id}/content", response_model=s.ContentListOut, response_model_exclude_none=True)
async def user_content(user_id: str, k: int = Query(5, ge=1, le=50),
                       language: str | None = Query(None, pattern=r"^[a-z]{2}$"), explain: bool = False,
                       svc: CatalogServices = Depends(services)) -> dict:
    """Guides and articles ranked by the same profile as the products."""
    s.RecommendIn(user_id=user_id)  # same id rules as everywhere
    profile_ref = svc.remote_profile(user_id)
    cold, items = await svc.retriever.content_for.remote(profile_ref, k, language, explain)
    return JSONResponse({"user_id": user_id, "cold_start": cold, "items": items})


@router.put("/v1/content/{content_id}")
async def put_content(content_id: str, body: s.ContentIn, svc: CatalogServices = Depends(services)) -> dict:
    from ecrec.content.library import Content

    doc = Content(id=content_id, **body.model_dump(exclude_none=True))
    unknown = [i for i, it in zip(doc.item_ids, await asyncio.gather(
        *(svc.retriever.get_item.remote(i) for i in doc.item_ids))) if it is None]
    if unknown:
        raise ApiError(422, f"item_ids: unknown item ids {unknown[:5]}")
    [vec] = await svc.encoder_call("embed_passages", [doc.embedding_text()])
    seq = await svc.board.put_content.remote(doc.model_dump_json(), vec)
    return {"content": json.loads(doc.model_dump_json()), "seq": seq,
            "propagation": f"all replicas within {svc.args.sync_interval_s:.1f}s"}


@router.get("/v1/content/{content_id}")
async def get_content(content_id: str, svc: CatalogServices = Depends(services)) -> dict:
    doc = await svc.retriever.get_content.remote(content_id)
    if doc is None:
        raise ApiError(404, f"unknown content id {content_id!r}")
    return json.loads(doc.model_dump_json())


@router.delete("/v1/content/{content_id}")
async def delete_content(content_id: str, svc: CatalogServices = Depends(services)) -> dict:
    if await svc.retriever.get_content.remote(content_id) is None:
        raise ApiError(404, f"unknown content id {content_id!r}")
    seq = await svc.board.delete_content.remote(content_id)
    return {"content_id": content_id, "deleted": True, "seq": seq}


@router.get("/v1/storefront", response_model=s.StorefrontOut)
async def storefront_config(svc: CatalogServices = Depends(services)) -> dict:
    """What the storefront page needs to know before its first call."""
    gate = svc.gate
    return {"auth_required": gate is not None, "read_requires_key": gate is not None and gate.read_requires_key,
            "chat": True, "languages": ["zh", "en"]}


@router.get("/", include_in_schema=False)
async def storefront():
    return _static("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str):
    return _static(name)
