"""The drift monitor as one named actor: every ingress replica feeds it (batched every 100 ms) and
``/v1/admin/drift`` reads it. The statistics and the alarm rules live in ``ecrec.operations.drift``."""
from __future__ import annotations

import logging
import time

import ray

from deployments.config import AppArgs

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class DriftActor:
    def __init__(self, reference: str | None, min_recent: int, window: int):
        from ray.util import metrics

        from ecrec.operations.drift import DriftConfig, DriftMonitor, Reference
        from ecrec.operations.drift_history import DriftHistory

        ref = Reference.load(reference) if reference else None
        self.monitor = DriftMonitor(ref, DriftConfig(window=window, min_recent=min_recent))
        self.g_score = metrics.Gauge("ecrec_drift_score", "drift scores of the recent window against the "
                                     "reference (PSI, or cosine distance for the mean shift)",
                                     tag_keys=("signal", "model_version"))
        self.g_alarm = metrics.Gauge("ecrec_drift_alarm", "1 while any drift alarm is raised",
                                     tag_keys=("model_version",))
        self.model_version = ""  # of the texts last observed (as the ingress tags its metrics)
        self._scored_at, self._alarmed = 0.0, False
        self.history = DriftHistory()  # a point a minute, and at every alarm change, for a day

    def observe(self, texts: list[tuple], items: list[str], model_version: str = "") -> None:
        if model_version and model_version != self.model_version:
            if self.model_version:  # no alarm stays raised under a version that no longer serves
                self.g_alarm.set(0.0, tags={"model_version": self.model_version})
            self.model_version = model_version
        for vector, sentiment, intent, language in texts:
            self.monitor.observe_text(vector, sentiment, intent, language)
        for i in items:
            self.monitor.observe_item(i)
        if time.monotonic() - self._scored_at >= 1.0:  # scores at most once a second
            self._export()

    def _export(self) -> dict:
        from ecrec.operations.drift_history import flat_scores

        s = self.monitor.scores()
        self._scored_at = time.monotonic()
        if not s["ready"]:
            return s
        self.history.add(time.time(), s)
        for signal, v in flat_scores(s).items():
            self.g_score.set(v, tags={"signal": signal, "model_version": self.model_version})
        self.g_alarm.set(1.0 if s["drift"] else 0.0, tags={"model_version": self.model_version})
        if s["drift"] and not self._alarmed:
            log.warning("drift: %s", "; ".join(s["alarms"]))
        self._alarmed = s["drift"]
        return s

    def scores(self) -> dict:
        return self._export()

    def history_points(self) -> list[dict]:
        self._export()  # the points up to now
        return list(self.history.points)

    def refit(self) -> dict:
        """The recent window becomes the reference (an operator's chosen period)."""
        ref = self.monitor.refit("the recent window, chosen by an operator")
        return {"texts": ref.n, "source": ref.source}


def get_drift(args: AppArgs):
    return DriftActor.options(name="ecrec-drift", namespace=args.namespace, lifetime="detached",
                              get_if_exists=True).remote(args.drift_reference, args.drift_min_recent,
                                                         args.drift_window)
