"""`ecrec serve` starts quietly (issue 29): the ingress printed ``_GatheringFuture exception was
never retrieved ... CancelledError`` at start, and a warning every 10 s while the encoder was still
loading its model. Ray is not started: the ingress's methods run on stand-ins for its handles."""
from __future__ import annotations

import asyncio
import gc
import logging
from types import SimpleNamespace


def _handle(method: str, call):
    return SimpleNamespace(**{method: SimpleNamespace(remote=call)})


def test_a_readyz_cancelled_mid_check_leaves_no_traceback(caplog):
    """A /readyz asked while the graph starts waits on replicas still loading; a client that gives up
    (a readiness poll with a short timeout) cancels it, and asyncio logged the abandoned gather."""
    from deployments.routes_admin import readyz

    async def main():
        never = lambda: asyncio.get_running_loop().create_future()  # a replica still loading
        ingress = SimpleNamespace(encoder=_handle("info", never), retrievers=[_handle("info", never)],
                                  board=_handle("last_seq", never), shards=[_handle("ping", never)] * 2)
        task = asyncio.ensure_future(readyz(svc=ingress))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        del task
        gc.collect()
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()], caplog.text


def test_the_flush_loop_warns_once_per_outage_and_not_while_the_encoder_starts(caplog):
    """The ingress reads the encoder's model version every 10 s: while the encoder still loads its
    model at start that is expected (no warning); an encoder that answered and then stops is a
    problem, said once with what to do, and once more when it answers again."""
    from deployments.ingress import Ingress

    answers: list = []

    async def info():
        if not answers or answers[0] is None:
            raise TimeoutError("the Encoder replica is still starting")
        return {"model": answers[0]}

    async def nothing():
        return None

    ingress = object.__new__(Ingress.func_or_class)  # its methods, without its __init__ (which starts Ray)
    ingress.__dict__.update(encoder=_handle("info", info), encoder_version="", _version_at=0.0,
                            _flush=lambda: None, _check_store_reach=nothing, _troubles=set())

    async def main():
        loop = asyncio.ensure_future(ingress._flush_forever())

        async def reads(n: int, answer):
            answers[:] = [answer]
            for _ in range(n):
                ingress._version_at = 0.0  # due now (every 10 s in service)
                await asyncio.sleep(0.15)

        await reads(3, None)  # starting
        await reads(2, "e5-small+a")
        await reads(3, None)  # an outage
        await reads(2, "e5-small+b")
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    with caplog.at_level(logging.INFO, logger="deployments.ingress"):
        asyncio.run(main())
    got = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "deployments.ingress"]
    assert ingress.encoder_version == "e5-small+b"
    assert len(got) == 2, got
    (level, msg), (level2, msg2) = got
    assert level == "WARNING" and "encoder" in msg and "serve status" in msg, msg
    assert level2 == "INFO" and "answers again" in msg2, msg2
