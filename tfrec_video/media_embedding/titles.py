"""The titles `tfrec-video embed --text-model` embeds into `title_embedding`, and embedding them.

**Where titles come from.** `--titles TABLE` names a catalog table in any of
the package's formats (a file, directory or glob of CSV, Parquet or TFRecord;
the training catalog itself will do): its `title` of each `video_id` is
embedded, and its other columns are not read. Without `--titles`, the media
CSV's `title` column is (`video_id,thumbnail_path,audio_path,title`, or
`video_id,title` when only `--text-model` is given). With both, `--titles`
wins. The videos embedded are the media CSV's rows, or the table's when no
CSV is given.

**Missing and empty titles.** A video of the media CSV that `--titles` has no
row for has no title: it is counted (`missing_title` in the summary) and, like a
missing thumbnail, left out of the output unless `--zero-fill`. An empty title
is a title: it gets the model's vector of `""`, the one the in-graph encoder
(`ModelConfig.title_encoder`) gives it.

**Resuming.** The embed step's state records `titles_sha256`, a hash of every
(video id, title) pair in row order, beside the text model: another title, or
the same titles from another source, is another run only when the text differs.

Example:

    tfrec-video embed --text-model encoders/e5_small --titles data/catalog/ --out title_emb.parquet
    tfrec-video embed --catalog media.csv --image-model mobilenet.tflite --text-model encoders/e5_small \\
        --out emb.parquet           # media.csv: video_id,thumbnail_path,audio_path,title
"""

import hashlib
import json
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfrec_video.data.media_embeddings import read_titles

log = logging.getLogger("tfrec_video.embed")


def titled_rows(rows: Optional[List[Dict[str, str]]], titles: Optional[str]) -> Tuple[List[Dict[str, str]], str]:
    """The rows to embed, each with its `title` (None for a video `titles` lacks), and the titles' hash.

    Args:
      rows: the media CSV's rows (`read_media_csv`; with a `title` each when
        `titles` is None), or None to embed every video of `titles`.
      titles: a catalog table holding `video_id` and `title`, or None.

    Returns:
      `(rows, sha256)`: the same row dicts with `title` set, and the hex sha256
      of the JSON `[video_id, title]` pairs in row order.

    Raises:
      DataValidationError: `titles` cannot be read (`read_titles`).
    """
    if titles is not None:
        table = read_titles(titles)
        rows = [{"video_id": video_id} for video_id in table] if rows is None else rows
        for row in rows:
            row["title"] = table.get(row["video_id"])
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["video_id"], row["title"]], ensure_ascii=False).encode("utf-8") + b"\n")
    return rows, digest.hexdigest()


def embed_titles(model, titles: Sequence[Optional[str]], counts) -> List[Optional[np.ndarray]]:
    """The vectors of a batch of titles: None for a missing title or a non-finite vector (both counted).

    Args:
      model: a `TextModel` (`load_text_model`).
      titles: the titles, None where a video has none.
      counts: the `EmbedSummary`, whose `missing_title` and `failed_title` are updated.
    """
    out: List[Optional[np.ndarray]] = [None] * len(titles)
    where = [i for i, title in enumerate(titles) if title is not None]
    counts.missing_title += len(titles) - len(where)
    if not where:
        return out
    for i, vector in zip(where, model.embed([titles[i] for i in where])):
        if np.all(np.isfinite(vector)):
            out[i] = vector
        else:
            counts.failed_title += 1
            log.warning("title skipped: %r: the model's embedding is not finite (NaN or infinity)", titles[i][:200])
    return out
