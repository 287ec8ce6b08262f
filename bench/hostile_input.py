"""How long a hostile config file takes to be refused, and how much memory the refusal needs, beside
loading the real sample spec. Prints figures only (the tests only guard against a hang)."""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from immutable.app_spec import load_app_spec
from immutable.bounded_yaml import MAX_FILE_BYTES
from immutable.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LAUGHS = "\n".join(
    ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)
CASES: dict[str, Callable[[], str]] = {
    "the sample spec (accepted)": lambda: (ROOT / "include" / "apps" / "sample.yaml").read_text(),
    "alias bomb (9^9 values)": lambda: LAUGHS,
    "flow nesting, 50,000 levels": lambda: "name: " + "[" * 50_000 + "]" * 50_000,
    "block nesting, 300 levels": lambda: "".join(f"{'  ' * d}k{d}:\n" for d in range(300)),
    "file of 4x the size limit": lambda: "note: " + "x" * (4 * MAX_FILE_BYTES),
    "largest allowed file, one huge string": lambda: "name: sample\nnote: " + "x" * (MAX_FILE_BYTES - 40),
}


def measure(text: str, folder: Path) -> tuple[float, float, str]:
    path = folder / "sample.yaml"
    path.write_text(text)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        load_app_spec(path)
        outcome = "accepted"
    except ConfigError as exc:
        outcome = f"refused: {str(exc).splitlines()[0][len(str(path)) + 2 :][:60]}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed_ms, peak / 2**20, outcome


def main() -> None:
    print("\nHostile config files: time and peak memory to refuse (load_app_spec)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in CASES.items():
            elapsed_ms, peak_mib, outcome = measure(make(), Path(tmp))
            print(f"  {name:<40} {elapsed_ms:8.1f} ms  {peak_mib:7.2f} MiB peak   {outcome}")


if __name__ == "__main__":
    main()
