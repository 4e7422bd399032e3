"""Human labels in and out: the relabel queue as CSV / Label Studio tasks, and their import.

Export (:func:`to_csv_frame`, :func:`to_labelstudio`): the queue's rows with the text, the served
label as a pre-annotation and why each row was queued. Import (:func:`read_label_file` ->
:func:`validate_labels` -> :func:`apply_labels`):

* every record is validated with Great Expectations (``labels.import`` suite, the ingest's
  machinery: :func:`warehouse.validation.run_suite`): a known article id, a known task, a label of
  that task, an annotator, a readable labelling time not in the future. Failing records go to
  ``quarantine`` (target ``labels``, source ``labels-import``) with every reason and the record
  as received; nothing is dropped. Rows nobody labelled (an empty CSV ``label``, a Label Studio
  task without annotations) are counted as unlabelled and skipped.
* good labels land in ``labels`` under the relabel dataset with annotator and ``labelled_at``.
  A different label of the same (dataset, item, task) replaces the stored one only when it is
  not older (``labelled_at``); the replaced row goes to ``label_history`` with what replaced it.
  Older labels of an item in the same file, and an import older than what is stored, go to
  ``label_history`` too. The queue row of a labelled article turns ``labelled``.
* a file is one batch, identified by its content: importing it again changes nothing.

No Prefect, no ``models`` here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from core.settings import Settings
from core.formats import SENTIMENT_LABELS, TASKS
from warehouse.connection import transaction
from warehouse.validation import Check, ValidationReport, run_suite

SOURCE = "labels-import"
FORMATS = ("csv", "labelstudio")
CSV_COLUMNS = ["article_id", "task", "label", "annotator", "labelled_at", "predicted_label", "baseline_label",
               "priority", "reasons", "source", "queue_day", "title", "text"]
BATCH_COLUMNS = ["record_no", "raw", "article_id", "task", "label", "label_key", "annotator", "labelled_raw",
                 "labelled_at", "labelled_status", "article_known"]
# A Label Studio project that reads the export: one choice per sentiment label, the text shown.
LABEL_STUDIO_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single" showInLine="true">
    <Choice value="negative"/><Choice value="neutral"/><Choice value="positive"/>
  </Choices>
</View>"""


# --------------------------------------------------------------------------- export

def to_csv_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Queue rows (:func:`warehouse.label_queue.export_rows`) as the CSV people fill in: ``label``,
    ``annotator`` and ``labelled_at`` empty, the served label and the reasons beside them."""
    out = rows.copy()
    for col in ("label", "annotator", "labelled_at"):
        out[col] = ""
    out["queue_day"] = out.queue_day.astype(str)
    return out[[c for c in CSV_COLUMNS if c in out]]


def to_labelstudio(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Queue rows as Label Studio tasks: ``data`` (text, article_id, task, source, title), the
    served label as a prediction (pre-annotation), and the queue's reasons in ``meta``."""
    tasks = []
    for r in rows.itertuples(index=False):
        tasks.append({
            "data": {"text": r.text, "article_id": r.article_id, "task": r.task, "source": r.source, "title": r.title},
            "predictions": [{"model_version": r.model_version, "score": float(r.priority),
                             "result": [{"from_name": r.task, "to_name": "text", "type": "choices",
                                         "value": {"choices": [r.predicted_label]}}]}] if r.predicted_label else [],
            "meta": {"queue_day": str(r.queue_day), "reasons": r.reasons, "priority": float(r.priority),
                     "baseline_label": r.baseline_label, "duplicates": r.duplicates},
        })
    return tasks


# --------------------------------------------------------------------------- import: read

def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or str(v).strip() == ""


def _annotator(ann: dict[str, Any]) -> str | None:
    who = ann.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("username") or who.get("id")
    who = who if not _blank(who) else ann.get("created_username")
    return None if _blank(who) else str(who)


def _choice(ann: dict[str, Any], task: str) -> str | None:
    for res in ann.get("result") or []:
        if not isinstance(res, dict) or res.get("type") != "choices":
            continue
        if res.get("from_name") not in (None, task) and len(ann.get("result") or []) > 1:
            continue
        choices = (res.get("value") or {}).get("choices") or []
        if choices:
            return str(choices[0])
    return None


def _labelstudio_records(data: Any) -> tuple[list[dict[str, Any]], int]:
    """Records of a Label Studio JSON export (one per submitted annotation) and how many tasks had none."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError("a Label Studio export is a JSON list of tasks")
    records, unlabelled = [], 0
    for t in data:
        if not isinstance(t, dict):
            records.append({"raw": json.dumps(t, default=str)})
            continue
        d = t.get("data") or {}
        task = d.get("task") or "sentiment"
        anns = [a for a in (t.get("annotations") or t.get("completions") or [])
                if isinstance(a, dict) and not a.get("was_cancelled")]
        if not anns:
            unlabelled += 1
            continue
        for a in anns:
            records.append({"article_id": d.get("article_id"), "task": task, "label": _choice(a, task),
                            "annotator": _annotator(a), "labelled_at": a.get("updated_at") or a.get("created_at"),
                            "raw": json.dumps({"data": {"article_id": d.get("article_id"), "task": task,
                                                         "text": d.get("text")}, "annotation": a}, default=str)})
    return records, unlabelled


def read_label_file(path: Path, annotator: str | None = None, fmt: str | None = None) -> tuple[pd.DataFrame, str, int]:
    """The records of a labelled file: ``(frame, format, unlabelled rows skipped)``.

    ``fmt``: ``csv`` (a header with at least ``article_id`` and ``label``; optional ``task``,
    default sentiment, ``annotator``, ``labelled_at``) or ``labelstudio`` (a JSON export);
    default from the suffix. ``annotator`` fills rows that name none. Raises ValueError (one
    line) for a file that is not one of those.
    """
    path = Path(path)
    fmt = fmt or ("labelstudio" if path.suffix.lower() == ".json" else "csv")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be csv or labelstudio, not {fmt!r}")
    if fmt == "labelstudio":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{path} is not a Label Studio JSON export ({exc})") from None
        records, unlabelled = _labelstudio_records(data)
        df = pd.DataFrame(records, columns=["article_id", "task", "label", "annotator", "labelled_at", "raw"])
    else:
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, csv_error()) as exc:
            raise ValueError(f"{path} is not a readable CSV ({str(exc).splitlines()[0] if str(exc) else exc})") from None
        missing = [c for c in ("article_id", "label") if c not in df.columns]
        if missing:
            raise ValueError(f"{path} has no {' or '.join(missing)} column (columns: {', '.join(df.columns[:12])})")
        df["raw"] = df.apply(lambda r: json.dumps({k: v for k, v in r.items() if k != "text"}, default=str), axis=1)
        blank = df.label.map(_blank)
        unlabelled = int(blank.sum())
        df = df[~blank]
        for col in ("task", "annotator", "labelled_at"):
            if col not in df:
                df[col] = None
        df = df[["article_id", "task", "label", "annotator", "labelled_at", "raw"]]
    df = df.reset_index(drop=True)
    df["task"] = df.task.map(lambda v: "sentiment" if _blank(v) else str(v).strip())
    df["label"] = df.label.map(lambda v: None if _blank(v) else str(v).strip())
    df["article_id"] = df.article_id.map(lambda v: None if _blank(v) else str(v).strip())
    df["annotator"] = df.annotator.map(lambda v: annotator if _blank(v) else str(v).strip())
    df.insert(0, "record_no", range(1, len(df) + 1))
    return df, fmt, unlabelled


def csv_error() -> type[Exception]:
    import csv

    return csv.Error


def file_batch_id(path: Path) -> str:
    """The import batch of a file: its content's sha256 (the same file is the same batch)."""
    return "labels-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


# --------------------------------------------------------------------------- import: validate

def _parse_time(v: Any) -> tuple[datetime | None, str]:
    if _blank(v):
        return None, "missing"
    try:
        t = pd.Timestamp(str(v).strip())
    except (ValueError, TypeError):
        return None, "bad"
    if t is pd.NaT:
        return None, "bad"
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.to_pydatetime(), "ok"


def allowed_labels(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Labels each task accepts: sentiment's three, and every topic the warehouse knows."""
    topics = [r[0] for r in con.execute("SELECT DISTINCT label FROM labels WHERE task = 'topic' ORDER BY 1").fetchall()]
    return {"sentiment": list(SENTIMENT_LABELS), "topic": topics}


def label_checks(allowed: dict[str, list[str]], now: datetime, tolerance_s: int) -> list[Check]:
    """The ``labels.import`` suite: ids known, task and label known, annotator and time present."""
    import great_expectations.expectations as gxe

    keys = [f"{t}:{lab}" for t, labs in allowed.items() for lab in labs] or ["sentiment:negative"]
    latest = now + timedelta(seconds=tolerance_s)
    return [
        Check(lambda: gxe.ExpectTableColumnsToMatchSet(column_set=BATCH_COLUMNS, exact_match=True), "error"),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="article_id"), "row", "'missing article id'"),
        Check(lambda: gxe.ExpectColumnValuesToBeInSet(column="article_known", value_set=["yes"]), "row",
              "'unknown article id: ' || coalesce(left(article_id, 80), '')"),
        Check(lambda: gxe.ExpectColumnValuesToBeInSet(column="task", value_set=list(TASKS)), "row",
              f"'unknown task: ' || left(task, 80) || ' (allowed: {', '.join(TASKS)})'"),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="label"), "row", "'missing label'"),
        Check(lambda: gxe.ExpectColumnValuesToBeInSet(column="label_key", value_set=keys), "row",
              "'unknown label: ' || coalesce(left(label, 80), '') || ' (task ' || task || ')'"),
        Check(lambda: gxe.ExpectColumnValuesToNotBeNull(column="annotator"), "row",
              "'missing annotator'"),
        Check(lambda: gxe.ExpectColumnValuesToBeInSet(column="labelled_status", value_set=["ok", "missing"]), "row",
              "'unparseable labelled_at: ' || left(labelled_raw, 80)"),
        Check(lambda: gxe.ExpectColumnValuesToBeBetween(column="labelled_at", max_value=latest), "row",
              "'labelled_at in the future: ' || labelled_at"),
    ]


def validate_labels(con: duckdb.DuckDBPyConnection, records: pd.DataFrame, settings: Settings,
                    now: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame, ValidationReport]:
    """GX-validate ``records`` against the warehouse on ``con``: ``(good, quarantined, report)``.

    ``good`` has ``labelled_at`` filled (the import time where the file gave none);
    ``quarantined`` has ``record_no, raw, reasons`` (every reason of the record).
    """
    from warehouse.connection import connect_memory

    now = now or datetime.now(UTC)
    df = records.copy()
    ids = [a for a in df.article_id.dropna().unique().tolist()]
    known = {r[0] for r in con.execute("SELECT article_id FROM articles WHERE article_id IN (SELECT unnest($ids))",
                                       {"ids": ids}).fetchall()} if ids else set()
    parsed = df.labelled_at.map(_parse_time)
    df["labelled_raw"] = df.labelled_at.map(lambda v: None if _blank(v) else str(v))
    df["labelled_at"] = pd.to_datetime(parsed.map(lambda p: p[0]), utc=True)
    df["labelled_status"] = parsed.map(lambda p: p[1])
    df["article_known"] = df.article_id.map(lambda a: "yes" if a in known else "no")  # GX binds ints as $1
    df["label_key"] = df.task.astype(str) + ":" + df.label.fillna("")
    batch = df[BATCH_COLUMNS]
    with connect_memory(settings) as mem:
        mem.register("incoming", batch)
        mem.execute("CREATE TABLE labelbatch AS SELECT * FROM incoming")
        mem.unregister("incoming")
        report = run_suite(mem, "labelbatch", "labels.import", label_checks(allowed_labels(con), now,
                                                                             settings.future_tolerance_s), 1.0)
        bad = mem.execute("SELECT record_no, list(DISTINCT reason ORDER BY reason) AS reasons FROM failures "
                          "GROUP BY record_no ORDER BY record_no").df()
    if report.batch_errors:
        raise ValueError("the label file failed validation: " + "; ".join(report.batch_errors))
    failed = set(bad.record_no.tolist())
    good = df[~df.record_no.isin(failed)].copy()
    good["labelled_at"] = good.labelled_at.fillna(pd.Timestamp(now))
    quarantined = bad.merge(df[["record_no", "raw"]], on="record_no", how="left")
    return good, quarantined, report


# --------------------------------------------------------------------------- import: apply

@dataclass
class ImportSummary:
    """The ``label_imports`` row of one file (and whether it was imported before)."""

    batch_id: str
    input: str
    format: str
    dataset: str
    rows_read: int
    rows_unlabelled: int
    rows_inserted: int
    rows_replaced: int
    rows_unchanged: int
    rows_superseded: int
    rows_quarantined: int
    already_imported: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for the CLI's JSON)."""
        return asdict(self)


def _stored(con: duckdb.DuckDBPyConnection, batch_id: str) -> ImportSummary | None:
    rows = con.execute("SELECT batch_id, input, format, dataset, rows_read, rows_unlabelled, rows_inserted, "
                       "rows_replaced, rows_unchanged, rows_superseded, rows_quarantined FROM label_imports "
                       "WHERE batch_id = ?", [batch_id]).fetchall()
    return ImportSummary(*rows[0], already_imported=True) if rows else None


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> Any:
    """``con.execute`` with the named parameters ``sql`` uses (DuckDB refuses extra ones)."""
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})


def apply_labels(con: duckdb.DuckDBPyConnection, batch_id: str, input_name: str, fmt: str, dataset: str,
                 good: pd.DataFrame, quarantined: pd.DataFrame, rows_read: int, unlabelled: int,
                 now: datetime | None = None) -> ImportSummary:
    """Write one validated file in one transaction (see the module docstring); idempotent per batch."""
    now = now or datetime.now(UTC)
    done = _stored(con, batch_id)
    if done is not None:
        return done
    g = good[["record_no", "article_id", "task", "label", "annotator", "labelled_at"]].copy()
    g["labelled_at"] = pd.to_datetime(g.labelled_at, utc=True)
    g = g.sort_values(["article_id", "task", "labelled_at", "record_no"]).reset_index(drop=True)
    last = ~g.duplicated(["article_id", "task"], keep="last")
    final, older = g[last], g[~last].merge(g[last][["article_id", "task", "label"]].rename(columns={"label": "final"}),
                                           on=["article_id", "task"])
    q = quarantined.copy()
    q["reasons"] = q.reasons.map(list)
    with transaction(con):
        con.register("li_final", final)
        con.register("li_older", older)
        con.register("li_bad", q)
        try:
            p = {"b": batch_id, "d": dataset, "now": now}
            _run(con, """INSERT INTO quarantine (batch_id, record_no, source, target_table, raw, reasons, quarantined_at)
                           SELECT $b, record_no, 'labels-import', 'labels', raw, reasons::VARCHAR[], $now FROM li_bad""", p)
            # Older labels of an item inside this file: kept, with the label that replaced them.
            _run(con, """INSERT INTO label_history SELECT $d, article_id, task, label, NULL, $b, $now, annotator,
                                  labelled_at, $b, final, $now FROM li_older""", p)
            _run(con, """CREATE OR REPLACE TEMP TABLE li_cmp AS
                           SELECT f.*, l.label AS old_label, l.labelled_at AS old_at, l.batch_id AS old_batch,
                                  CASE WHEN l.item IS NULL THEN 'insert'
                                       WHEN l.label = f.label THEN 'unchanged'
                                       WHEN l.labelled_at IS NOT NULL AND f.labelled_at < l.labelled_at THEN 'older'
                                       ELSE 'replace' END AS action
                           FROM li_final f LEFT JOIN labels l
                             ON l.dataset = $d AND l.item = f.article_id AND l.task = f.task""", {"d": dataset})
            # A stored label that a newer one replaces -> history, as it was.
            _run(con, """INSERT INTO label_history
                           SELECT l.dataset, l.item, l.task, l.label, l.split, l.batch_id, l.created_at, l.annotator,
                                  l.labelled_at, $b, c.label, $now
                           FROM labels l JOIN li_cmp c ON l.dataset = $d AND l.item = c.article_id AND l.task = c.task
                           WHERE c.action = 'replace'""", p)
            # An import older than the stored label: kept in history, the stored one stays.
            _run(con, """INSERT INTO label_history SELECT $d, article_id, task, label, NULL, $b, $now, annotator,
                                  labelled_at, old_batch, old_label, $now FROM li_cmp WHERE action = 'older'""", p)
            _run(con, """UPDATE labels SET label = c.label, label_set = NULL, batch_id = $b, created_at = $now,
                                  annotator = c.annotator, labelled_at = c.labelled_at
                           FROM li_cmp c WHERE labels.dataset = $d AND labels.item = c.article_id
                             AND labels.task = c.task AND c.action = 'replace'""", p)
            _run(con, """INSERT INTO labels (dataset, item, task, label, split, batch_id, created_at, annotator, labelled_at)
                           SELECT $d, article_id, task, label, NULL, $b, $now, annotator, labelled_at
                           FROM li_cmp WHERE action = 'insert'""", p)
            con.execute("""UPDATE label_queue SET status = 'labelled', labelled_at = c.labelled_at
                           FROM li_cmp c WHERE label_queue.article_id = c.article_id AND label_queue.task = c.task
                             AND c.action <> 'older'""")
            counts = dict(con.execute("SELECT action, count(*) FROM li_cmp GROUP BY 1").fetchall())
            summary = ImportSummary(batch_id, input_name, fmt, dataset, rows_read, unlabelled,
                                    int(counts.get("insert", 0)), int(counts.get("replace", 0)),
                                    int(counts.get("unchanged", 0)), int(len(older)) + int(counts.get("older", 0)),
                                    int(len(q)))
            con.execute("INSERT INTO label_imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [batch_id, input_name, fmt, dataset, rows_read, unlabelled, summary.rows_inserted,
                         summary.rows_replaced, summary.rows_unchanged, summary.rows_superseded,
                         summary.rows_quarantined, now])
        finally:
            for name in ("li_final", "li_older", "li_bad"):
                con.unregister(name)
            con.execute("DROP TABLE IF EXISTS li_cmp")
    return summary


def import_file(con: duckdb.DuckDBPyConnection, path: Path, settings: Settings, *, annotator: str | None = None,
                fmt: str | None = None, dataset: str | None = None, now: datetime | None = None) -> ImportSummary:
    """Read, validate and apply one labelled file (the whole ``newspulse labels import``)."""
    path = Path(path)
    batch_id = file_batch_id(path)
    dataset = dataset or settings.relabel_dataset
    done = _stored(con, batch_id)
    if done is not None:
        return done
    records, fmt, unlabelled = read_label_file(path, annotator=annotator, fmt=fmt)
    good, bad, _ = validate_labels(con, records, settings, now)
    return apply_labels(con, batch_id, str(path), fmt, dataset, good, bad, len(records) + unlabelled, unlabelled, now)
