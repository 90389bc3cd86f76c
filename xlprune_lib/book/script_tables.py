"""Results tables that scripts write, not chapters: speed at a published shape, measured on random weights (so
no profile or seed columns). Standard library only beside torch, so ``scripts/bench_gpu.py`` runs where the
book's extras (pandas, papermill) are not installed."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..config import write_json_atomic, write_text_atomic
from ..measure.report import provenance

# table name -> columns every row must have (more may follow)
SCRIPT_TABLES = {
    "05_speed_gpu": ("device", "model", "dtype", "batch", "seq_len", "median_ms", "latency_ratio", "peak_memory_mb"),
    "05_speed_base_shape": ("shape", "requested", "encoder_removed", "batch", "seq_len", "median_ms", "q1_ms",
                            "q3_ms", "latency_ratio", "repeats", "threads"),
}


def save_script_table(rows: list[dict], name: str, path, config: dict) -> Path:
    """Write the rows of the :data:`SCRIPT_TABLES` table ``name`` to the CSV ``path`` and its provenance beside it
    (``.provenance.json``: ``config``, git commit, versions, machine), atomically. Raises ``ValueError`` for an
    unknown name, no rows, or a row without a required column (then nothing is written)."""
    path = Path(path)
    if name not in SCRIPT_TABLES:
        raise ValueError(f"unknown script table {name!r}; known: {', '.join(SCRIPT_TABLES)}")
    missing = sorted({c for row in rows for c in SCRIPT_TABLES[name] if c not in row},
                     key=SCRIPT_TABLES[name].index)
    if missing or not rows:
        raise ValueError(f"table {name}: {'no rows' if not rows else f'missing columns {missing}'}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    write_json_atomic(path.with_suffix(".provenance.json"), {"table": name, "rows": len(rows), **provenance(config)})
    return path
