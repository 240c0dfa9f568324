"""A/B tests of ranking configurations: shoppers split into arms by a stable hash of their id.

An experiment is a few named arms, each a set of ``RankingConfig`` overrides (the first arm is
the control, usually ``{}``). A shopper's arm is ``blake2b(salt | user_id)`` modulo the number of
arms: the same in every process and on every node, so a shopper sees one arm for the life of the
experiment, and a new salt reshuffles everyone. Lists without a user (text-only requests) are
ranked by the control. The arm travels with every served list, so the online metrics
(``ecrec.operations.attribution``) split CTR and CVR by arm.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass

from ecrec.retrieval.ranking import RankingConfig

DEFAULT_ARM = "default"  # the arm name of every list when no experiment runs
MAX_ARMS = 8
_ARM_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
_UPPER = {"explore_share": 0.5, "mmr_lambda": 1.0, "text_share": 1.0, "sequence_weight": 1.0}


@dataclass(frozen=True)
class Experiment:
    arms: tuple[tuple[str, tuple[tuple[str, object], ...]], ...]  # (name, overrides) in order
    salt: str = "ab"

    @classmethod
    def parse(cls, spec) -> "Experiment | None":
        """``{"arms": {"control": {}, "explore20": {"explore_share": 0.2}}, "salt": "2026-11"}``, or
        just the arms mapping, as a dict or a JSON string. None or empty: no experiment. Raises
        ``ValueError`` saying what is wrong."""
        if spec is None or spec == "" or spec == {}:
            return None
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as e:
                raise ValueError(f"ab_test is not valid JSON: {e}") from e
        if not isinstance(spec, dict):
            raise ValueError("ab_test must be a mapping of arm name -> RankingConfig overrides")
        salt = spec.get("salt", "ab") if "arms" in spec else "ab"
        arms = spec["arms"] if "arms" in spec else spec
        extra = set(spec) - {"arms", "salt"} if "arms" in spec else set()
        if extra:
            raise ValueError(f"ab_test: unknown keys {sorted(extra)} (give arms and salt)")
        if not isinstance(salt, str) or not salt:
            raise ValueError("ab_test salt must be a non-empty string")
        if not isinstance(arms, dict) or not 2 <= len(arms) <= MAX_ARMS:
            raise ValueError(f"ab_test needs 2 to {MAX_ARMS} arms, got {arms!r}")
        fields = {f.name: f for f in dataclasses.fields(RankingConfig)}
        out = []
        for name, overrides in arms.items():
            if not isinstance(name, str) or not _ARM_NAME.match(name):
                raise ValueError(f"ab_test arm name {name!r}: use 1-32 of a-z, 0-9, _ and -")
            if not isinstance(overrides, dict):
                raise ValueError(f"ab_test arm {name!r}: overrides must be a mapping, got {overrides!r}")
            for key, value in overrides.items():
                if key not in fields or key == "seed":
                    raise ValueError(f"ab_test arm {name!r}: {key!r} is not a RankingConfig setting")
                default = fields[key].default
                if isinstance(default, bool):
                    ok = isinstance(value, bool)
                elif isinstance(default, int):
                    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
                else:
                    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                          and 0 <= value <= _UPPER.get(key, math.inf))
                if not ok:
                    raise ValueError(f"ab_test arm {name!r}: {key} must be a value like {default!r}"
                                     f"{' within [0, %g]' % _UPPER[key] if key in _UPPER else ''}, got {value!r}")
            try:
                dataclasses.replace(RankingConfig(), **overrides)
            except (TypeError, ValueError) as e:
                raise ValueError(f"ab_test arm {name!r}: {e}") from e
            out.append((name, tuple(sorted(overrides.items()))))
        return cls(tuple(out), salt)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.arms]

    def arm_of(self, user_id: str | None) -> str:
        if not user_id:
            return self.arms[0][0]
        h = hashlib.blake2b(f"{self.salt}|{user_id}".encode(), digest_size=8).digest()
        return self.arms[int.from_bytes(h, "little") % len(self.arms)][0]

    def config(self, arm: str, base: RankingConfig) -> RankingConfig:
        return dataclasses.replace(base, **dict(dict(self.arms)[arm]))
