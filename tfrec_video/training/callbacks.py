"""Keras callbacks of a training run: validation Recall@K and the embedding projector.

`model.fit` with a validation set already reports `val_auc`, `val_logloss` and
the validation losses (computed batch by batch). Retrieval quality needs the
whole catalog, which a per-batch metric cannot see, so:

* `RetrievalRecall` scores every validation click against the whole catalog at
  the end of each epoch (one exact matmul, `tfrec_video.evaluation.ranking`)
  and adds `val_recall_at_K` to the epoch's logs; with `exclude_seen=True` each
  click's watched videos are left out first, as the export serves. Placed before
  `EarlyStopping`, `ModelCheckpoint`, `TensorBoard` and `CSVLogger` in the
  callback list, it is seen by all of them like any other validation metric.
* `EmbeddingProjector` writes the catalog's video embeddings, with their ids,
  titles and categories as metadata, for TensorBoard's embedding projector.

Example:

    recall = RetrievalRecall("data/valid/", catalog, impressions_schema(20), k=100)
    stop = tf.keras.callbacks.EarlyStopping("val_recall_at_100", mode="max", patience=2)
    model.fit(train, validation_data=valid, epochs=10,
              callbacks=[recall, stop, EmbeddingProjector("runs/x/tensorboard", catalog)])
"""

import os
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.data.schema import TableSchema, as_strings
from tfrec_video.data.tables import read_table
from tfrec_video.errors import shorten
from tfrec_video.evaluation.candidates import catalog_index, catalog_rows
from tfrec_video.evaluation.ranking import CatalogRanker, embed_catalog

# Metadata columns written for the projector, when the catalog has them.
PROJECTOR_COLUMNS = ("video_id", "title", "category")
PROJECTOR_TENSOR = "video_embedding"


class RetrievalRecall(tf.keras.callbacks.Callback):
    """Adds `val_recall_at_K`, whole-catalog Recall@K of the validation clicks, to each epoch's logs.

    Args:
      paths: validation impressions files (file, directory, glob or list).
      catalog: the catalog as column arrays; every video in it is a candidate.
      schema: the impressions schema.
      k: the cut-off K.
      batch_size: clicks scored per matmul.
      max_clicks: score at most this many validation clicks, to bound the time per
        epoch: a uniform sample of them, drawn once (with `seed`) and kept for
        every epoch, so that the epochs are compared on the same clicks and
        files sorted by user or time do not bias it. None scores them all.
      seed: seed of that sample.
      exclude_seen: rank each click's video among the catalog less the videos in
        its own `history` (what the export serves by default: `exclude_seen` of
        `export_saved_model`); a click on a video of its own history then counts
        as a miss. Without a `history` column nothing is left out.
    """

    def __init__(self, paths, catalog: Mapping[str, np.ndarray], schema: TableSchema, k: int = 100,
                 batch_size: int = 1024, max_clicks: Optional[int] = 20_000, seed: int = 0,
                 exclude_seen: bool = False):
        super().__init__()
        if not isinstance(k, int) or k <= 0:
            raise ValueError(f"RetrievalRecall: k must be a positive integer, got {shorten(k)}.")
        if max_clicks is not None and (not isinstance(max_clicks, int) or max_clicks <= 0):
            raise ValueError("RetrievalRecall: max_clicks must be a positive integer or None, got "
                             f"{shorten(max_clicks)}.")
        self.paths = paths
        self.catalog = catalog
        self.schema = schema
        self.k = k
        self.batch_size = batch_size
        self.max_clicks = max_clicks
        self.seed = seed
        self.key = f"val_recall_at_{k}"
        self._clicks = None
        self._frozen = None
        self._ranker = None
        self._embed = self._embed_model = None
        self.exclude_seen = bool(exclude_seen)
        self._index_of = catalog_index(catalog["video_id"])
        self._seen = None

    def recall(self) -> float:
        """Recall@K of the current model on the validation clicks (NaN when there are none)."""
        videos = embed_catalog(self.model, self.catalog)
        if self._ranker is None:
            self._ranker = CatalogRanker(videos)
        else:
            self._ranker.set_videos(videos)
        ranker = self._ranker
        names = list(self.model.query_feature_names)
        if self._embed is None or self._embed_model is not self.model:
            model = self.model
            self._embed = tf.function(lambda f: model.embed_queries(f, training=False), reduce_retracing=True)
            self._embed_model = model
        embed = self._embed
        clicks = self.sampled_clicks()
        seen = self.seen_rows()
        hits = total = 0
        for start in range(0, len(clicks["target"]), self.batch_size):
            rows = slice(start, start + self.batch_size)
            queries = embed({n: tf.constant(clicks[n][rows]) for n in names if n in clicks}).numpy()
            ranks = ranker(queries, clicks["target"][rows], None if seen is None else seen[rows])
            hits += int((ranks < self.k).sum())
            total += len(ranks)
        return hits / total if total else float("nan")

    def seen_rows(self) -> Optional[np.ndarray]:
        """Catalog rows `[clicks, history_length]` of each sampled click's `history` (-1: padding or a
        video outside the catalog), left out of its ranking; None without `exclude_seen` or `history`."""
        clicks = self.sampled_clicks()
        if self._seen is None and self.exclude_seen and "history" in clicks:
            self._seen = catalog_rows(self._index_of, clicks["history"])
        return self._seen

    def sampled_clicks(self) -> Mapping[str, np.ndarray]:
        """The validation clicks scored every epoch, as columns, with `target` (catalog rows).

        Read on the first call: every click, or a uniform sample of `max_clicks`
        of them (in file order); a clicked video outside the catalog cannot be
        retrieved and is left out.
        """
        if self._clicks is not None:
            return self._clicks
        data = read_table(self.paths, self.schema, validate=False).filter(lambda row: row["clicked"] > 0)
        keep = None
        if self.max_clicks is not None:
            # A first pass counts the clicks, so that only the sampled ones are held in memory.
            n = int(data.reduce(np.int64(0), lambda count, _: count + 1))
            if n > self.max_clicks:
                keep = np.zeros(n, bool)
                keep[np.random.default_rng(self.seed).choice(n, self.max_clicks, replace=False)] = True
        columns, offset = {"target": []}, 0
        for batch in data.batch(8192):
            size = int(tf.shape(batch["clicked"])[0])
            rows = np.ones(size, bool) if keep is None else keep[offset:offset + size]
            offset += size
            target = catalog_rows(self._index_of, batch["video_id"].numpy())
            rows &= target >= 0
            columns["target"].append(target[rows])
            for name, values in batch.items():
                columns.setdefault(name, []).append(values.numpy()[rows])
        self._clicks = {name: np.concatenate(parts) if parts else np.zeros([0], np.int64)
                        for name, parts in columns.items()}
        return self._clicks

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # While HeadSelection trains the ranking (or watch) head alone the towers are frozen: the recall
        # cannot move, and is computed once in those phases.
        if getattr(self.model, "trained_heads", "both") == "both":
            self._frozen = None
            logs[self.key] = self.recall()
        else:
            if self._frozen is None:
                self._frozen = self.recall()
            logs[self.key] = self._frozen


class EmbeddingProjector(tf.keras.callbacks.Callback):
    """Writes the catalog's video embeddings for TensorBoard's projector at the end of training.

    The files go to `log_dir`: `vectors.tsv` (one row of `dim` values per video),
    `metadata.tsv` (a header row, then one row per video: id, title, category)
    and `projector_config.pbtxt` linking the two, which is what TensorBoard's
    projector plugin reads (`tensorboard --logdir log_dir`, then the
    PROJECTOR tab).

    Args:
      log_dir: the TensorBoard log directory.
      catalog: the catalog as column arrays.
      max_videos: embed at most this many videos (catalog order).
      every_epoch: also rewrite them at the end of every epoch.
    """

    def __init__(self, log_dir: str, catalog: Mapping[str, np.ndarray], max_videos: int = 10_000,
                 every_epoch: bool = False):
        super().__init__()
        self.log_dir = log_dir
        self.catalog = {name: values[:max_videos] for name, values in catalog.items()}
        self.every_epoch = every_epoch

    def write(self) -> str:
        """Writes the embeddings, metadata and projector config; returns the metadata path."""
        from tensorboard.plugins import projector

        os.makedirs(self.log_dir, exist_ok=True)
        embeddings = embed_catalog(self.model, self.catalog)
        columns = projector_columns(self.catalog)
        metadata = os.path.join(self.log_dir, "metadata.tsv")
        with open(metadata + ".tmp", "w", encoding="utf-8") as f:
            f.write("\t".join(columns) + "\n")
            cells = [as_strings(self.catalog[c]) for c in columns]
            for row in zip(*cells):
                # The TSV has no quoting: tabs and newlines inside a title would shift the columns.
                f.write("\t".join(" ".join(str(v).split()) for v in row) + "\n")
        os.replace(metadata + ".tmp", metadata)
        # The vectors go in a TSV the projector reads directly (`tensor_path`), not in a checkpoint: a
        # tf.Variable made here, inside fit's strategy scope, would be a mirrored variable that the chief
        # alone would try to broadcast to the other workers.
        vectors = os.path.join(self.log_dir, "vectors.tsv")
        np.savetxt(vectors + ".tmp", embeddings, fmt="%.6g", delimiter="\t")
        os.replace(vectors + ".tmp", vectors)
        config = projector.ProjectorConfig()
        embedding = config.embeddings.add()
        embedding.tensor_name = PROJECTOR_TENSOR
        embedding.tensor_path = "vectors.tsv"
        embedding.metadata_path = "metadata.tsv"
        projector.visualize_embeddings(self.log_dir, config)
        return metadata

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epoch:
            self.write()

    def on_train_end(self, logs=None):
        self.write()


def projector_columns(catalog: Mapping[str, np.ndarray]) -> Sequence[str]:
    """The metadata columns `EmbeddingProjector` writes for this catalog."""
    return [c for c in PROJECTOR_COLUMNS if c in catalog]
