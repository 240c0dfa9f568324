"""Schemathesis fuzzing of the live OpenAPI schema: >= 1,000 generated requests, no 5xx, every
response true to the schema its operation documents, every 4xx a JSON body with ``detail``.

Schemathesis 4.x Python API, driven by hand so every request is counted and every failure kept
(none of them stops the run): ``schemathesis.openapi.from_url`` loads ``/openapi.json`` from the
session server, ``APIOperation.as_strategy(generation_mode=...)`` gives a Hypothesis strategy per
operation and mode (positive: data the schema allows; negative: data it forbids), ``Case.call``
sends a case and ``Case.validate_response(checks=[...])`` runs the two checks that matter here.
Undocumented statuses (400, 401, 403, 404, 405, 413, 429, 503...) fail nothing by themselves:
``response_schema_conformance`` only validates a status the operation documents
(``specs/openapi/validation.py: validate_documented_response``) and ``status_code_conformance``
is not run. A documented one is held to its schema: every 422 must be FastAPI's
``HTTPValidationError`` (``detail``: a list of ``{loc, msg, type}``). 503 passes only with Retry-After.

Every operation is fuzzed, writes included. Generated ids are random strings, so they practically
never name what other tests use; two guards make that certain rather than likely:
- PUT/DELETE ``/v1/items/{item_id}`` never touch a demo-catalog item: an id that (after the
  decoding and stripping the server does) names one gets a ``fuzz-`` prefix;
- every item a PUT created is deleted at the end and the catalog size is checked to be back where
  it was, because later tests (``test_serve_api``) compare rankings with the in-process engine on
  the demo catalog alone.
DELETE ``/v1/users/{user_id}`` stays: it only erases random shoppers, and the shoppers of other
tests are created by those tests themselves.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

schemathesis = pytest.importorskip("schemathesis", minversion="4.32")

import hypothesis  # noqa: E402  (installed with schemathesis)
import requests  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.disruptive]

SEED = 20_240_607
MIN_REQUESTS = 1000
# Cases per operation and generation mode. Positive: 9 operations x 80, plus /healthz and /readyz
# (one possible case each); negative: the 6 operations with a body or typed query parameters x 80
# (a bare string path parameter has no negative value). (9 + 6) * 80 + 2 = 1,202 requests.
EXAMPLES = int(os.environ.get("ECREC_FUZZ_EXAMPLES", "80"))
REQUEST_TIMEOUT_S = 60
ITEM_PATH = "/v1/items/{item_id}"
CATALOG = Path(__file__).resolve().parents[2] / "ecrec" / "data" / "demo_catalog.jsonl"
PROTECTED_ITEMS = frozenset(json.loads(line)["id"] for line in CATALOG.read_text(encoding="utf-8").splitlines()
                            if line.strip()) | {"phones-sat", "colo-new"}  # test_serve_api's own items


@pytest.fixture(scope="session")
def api_key() -> str | None:
    """Optional bearer key (the server may require one on write routes)."""
    return os.environ.get("ECREC_TEST_API_KEY") or None


def _excerpt(data: bytes | str | None, n: int = 300) -> str:
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return text if len(text) <= n else text[:n] + "..."


def _guard(case) -> None:
    """Keep PUT/DELETE of items off the demo catalog (the server strips the decoded id)."""
    if case.operation.path != ITEM_PATH or case.method.upper() not in ("PUT", "DELETE"):
        return
    raw = str((case.path_parameters or {}).get("item_id", ""))
    if unquote(raw).strip() in PROTECTED_ITEMS:
        case.path_parameters = {**case.path_parameters, "item_id": "fuzz-" + raw}


def _detail_problem(status: int, content: bytes) -> str | None:
    """A 4xx/503 must be a JSON object with ``detail``; say what is wrong, or None."""
    try:
        body = json.loads(content)
    except ValueError:
        return f"{status} body is not JSON"
    if not isinstance(body, dict) or "detail" not in body:
        return f"{status} body has no 'detail'"
    return None


def _patient(client, method: str, url: str, headers: dict):
    """One httpx request, re-sent after a 429's Retry-After (at most 5 times)."""
    for _ in range(5):
        r = client.request(method, url, headers=headers)
        if r.status_code != 429 or "retry-after" not in r.headers:
            break
        time.sleep(min(5.0, float(r.headers["retry-after"])))
    return r


def _readyz_items(client, headers) -> int:
    return _patient(client, "GET", "/readyz", headers).json()["items"]


def test_fuzz_live_schema(server, api_key):
    import torch

    # The encoder turns on flush-to-zero for speed (ecrec/text/encoder.py), process-wide; Hypothesis
    # refuses to generate floats in that mode. This process only generates requests from here on.
    torch.set_flush_denormal(False)
    client, args = server
    base = str(client.base_url).rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=schemathesis.Config(),
                                           headers=headers, timeout=REQUEST_TIMEOUT_S)
    items_before = _readyz_items(client, headers)

    session = requests.Session()
    sent: Counter = Counter()  # requests answered, per operation
    statuses: Counter = Counter()
    failures: list[dict] = []
    created: set[str] = set()  # item ids a fuzzed PUT added: deleted at the end
    unsatisfiable: list[str] = []
    rate_limited = [0]  # 429s waited out and re-sent (not counted in `sent`)

    def record(case, status: int | None, problem: str, content: bytes | None = None) -> None:
        failures.append({"op": case.operation.label, "path": case.formatted_path, "status": status,
                         "problem": problem, "body": _excerpt(content),
                         "request": _excerpt(repr((case.query, case.body)), 200)})

    def fuzz_one(case) -> None:
        _guard(case)
        try:
            for _ in range(5):  # rate-limited (429 + Retry-After, with API keys on): wait, send the same case again
                response = case.call(base_url=base, session=session, headers=headers, timeout=REQUEST_TIMEOUT_S)
                if response.status_code != 429 or "retry-after" not in response.headers:
                    break
                rate_limited[0] += 1
                time.sleep(min(5.0, float(response.headers["retry-after"][0])))
        except requests.RequestException as e:  # a hang or a dropped connection is the server's fault too
            record(case, None, f"transport error: {type(e).__name__}: {_excerpt(str(e), 200)}")
            return
        status = response.status_code
        sent[case.operation.label] += 1
        statuses[status] += 1
        overload = status == 503 and "retry-after" in response.headers  # backpressure, documented in README
        checks = [response_schema_conformance] if overload else [not_a_server_error, response_schema_conformance]
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except FailureGroup as group:
            for f in group.exceptions:
                record(case, status, f"{f.title}: {_excerpt(' '.join(f.message.split()), 200)}", response.content)
        if 400 <= status < 500 or overload:
            problem = _detail_problem(status, response.content)
            if problem:
                record(case, status, problem, response.content)
        if case.operation.path == ITEM_PATH and case.method.upper() == "PUT" and status == 200:
            try:
                created.add(json.loads(response.content)["item"]["id"])
            except (ValueError, KeyError, TypeError):
                record(case, status, "PUT answered 200 without item.id", response.content)

    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the live schema has no operations"
    for i, operation in enumerate(operations):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # An explicit seed wins over derandomize (hypothesis.core.get_random_for_wrapped_test);
            # both are set so the run is the same every time whatever the pytest/Hypothesis options.
            @hypothesis.seed(SEED + 2 * i + (mode is GenerationMode.NEGATIVE))
            @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                      report_multiple_bugs=False)
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                fuzz_one(case)

            try:
                run()
            except Unsatisfiable:  # e.g. no negative value exists for a bare string path parameter
                unsatisfiable.append(f"{operation.label} [{mode.value}]")

    # Put the catalog back as it was: later tests rank against the demo catalog alone.
    time.sleep(3 * args.sync_interval_s + 0.5)  # the last PUTs reach the retrievers first
    for item_id in sorted(created):
        url = f"/v1/items/{quote(item_id, safe='')}"
        r = _patient(client, "DELETE", url, headers)
        if r.status_code not in (200, 404):  # 404: a fuzzed DELETE already removed it
            failures.append({"op": f"cleanup DELETE {ITEM_PATH}", "path": url, "status": r.status_code,
                             "problem": "an item a fuzzed PUT created could not be deleted",
                             "body": _excerpt(r.text), "request": ""})
    deadline = time.time() + 10
    while (items_after := _readyz_items(client, headers)) != items_before and time.time() < deadline:
        time.sleep(0.2)

    total = sum(sent.values())
    print(f"\nfuzzed {total} requests over {len(operations)} operations, {EXAMPLES} examples per operation and mode;"
          f" created and deleted {len(created)} items")
    for label, n in sorted(sent.items()):
        print(f"  {n:5d}  {label}")
    print("  statuses:", dict(sorted(statuses.items())), f"(and {rate_limited[0]} 429s waited out)")
    if unsatisfiable:
        print("  no cases:", ", ".join(unsatisfiable))
    kinds = Counter((f["op"], f["status"], f["problem"].split(":")[0]) for f in failures)
    shown: set = set()
    for f in failures:  # the first case of each kind of failure
        key = (f["op"], f["status"], f["problem"].split(":")[0])
        if key in shown:
            continue
        shown.add(key)
        print(f"FAIL x{kinds[key]} {f['op']} -> {f['status']}  path={f['path']}\n    {f['problem']}\n"
              f"    request={f['request']}\n    body={f['body']}")

    assert items_after == items_before, f"catalog has {items_after} items after fuzzing, {items_before} before"
    assert total >= MIN_REQUESTS, f"only {total} requests were generated and answered (want >= {MIN_REQUESTS})"
    assert not failures, (f"{len(failures)} failures in {total} requests, {len(kinds)} kinds:\n"
                          + "\n".join(f"  x{n} {op} -> {st}: {p}" for (op, st, p), n in kinds.most_common()))
