"""From raw event logs to the package's tables: `tfrec-video prepare`.

    events.py          EventChunk, read_events: the log, read and checked in pieces
    splits.py          SplitRule: time, leave-one-out or random splits
    negatives.py       NegativeSampler: negatives for logs of positives only
    user_rows.py       cap_events, histories, user_rows: one user's events to rows
    report.py          the statistics of prepare_report.json
    beam_transforms.py the Beam transforms (imports apache_beam)
    runner.py          run_pipeline: in process by default, options checked, worker errors as ours
    pipeline.py        PrepareConfig, prepare: runs it, writes atomically

Only `pipeline.prepare` and `runner.run_pipeline` import Apache Beam, when called, so `import
tfrec_video` stays light. May import data and the base modules; never a higher layer
(`media_embedding` runs its Beam pipeline through `runner`).

Example:

>>> from tfrec_video.preparation import PrepareConfig, SplitRule, prepare
>>> report = prepare(PrepareConfig(events="logs/*.parquet", catalog="videos.csv", out="data/",
...                                split=SplitRule("time", test_from="2026-11-01")))  # doctest: +SKIP
"""

from tfrec_video.preparation.events import EventBlock, EventChunk, event_chunks, parse_timestamps, read_events
from tfrec_video.preparation.negatives import SAMPLING, NegativeSampler, user_rng
from tfrec_video.preparation.pipeline import OUTPUT_FORMATS, REPORT_FILE, RUN_CONFIG_FILE, PrepareConfig, prepare
from tfrec_video.preparation.splits import SPLIT_KINDS, SPLITS, SplitRule
from tfrec_video.preparation.user_rows import cap_events, histories, user_rows

__all__ = [
    "EventBlock", "EventChunk", "event_chunks", "parse_timestamps", "read_events",
    "SAMPLING", "NegativeSampler", "user_rng",
    "OUTPUT_FORMATS", "REPORT_FILE", "RUN_CONFIG_FILE", "PrepareConfig", "prepare",
    "SPLIT_KINDS", "SPLITS", "SplitRule",
    "cap_events", "histories", "user_rows",
]
