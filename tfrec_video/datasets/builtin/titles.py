"""Video titles of the built-in dataset: `_TitleMaker` (topic words, noise words, languages)."""

from typing import List

import numpy as np

from tfrec_video.datasets.builtin.config import BuiltinConfig
from tfrec_video.datasets.builtin.topics import FILLER_WORDS


class _TitleMaker:
    """Draws titles; word choices are vectorised, only the final join is per title."""

    def __init__(self, cfg: BuiltinConfig):
        self.cfg = cfg
        words, is_zh = [], []
        # offsets[lang][k], lengths[lang][k]: where topic k's words in `lang` are in `self.vocab`.
        self.offsets, self.lengths, self.noise_ids = {}, {}, {}
        for lang in ("en", "zh"):
            offs, lens = [], []
            for t in cfg.topics:
                offs.append(len(words))
                lens.append(len(getattr(t, lang)))
                words += getattr(t, lang)
                is_zh += [lang == "zh"] * len(getattr(t, lang))
            filler = list(range(len(words), len(words) + len(FILLER_WORDS[lang])))
            words += FILLER_WORDS[lang]
            is_zh += [lang == "zh"] * len(FILLER_WORDS[lang])
            self.offsets[lang], self.lengths[lang] = np.array(offs), np.array(lens)
            # Noise words: the filler words and every topic's words, uniformly.
            topic_ids = [i for k in range(len(offs)) for i in range(offs[k], offs[k] + lens[k])]
            self.noise_ids[lang] = np.array(filler + topic_ids)
        self.vocab = words
        self.is_zh = np.array(is_zh)

    def make(self, theta: np.ndarray, language: np.ndarray, rng: np.random.Generator) -> List[str]:
        n, K = theta.shape
        # Draw more word slots than the longest title, so that skipping repeated
        # words still leaves enough for the title's length.
        slots = 16
        n_words = rng.integers(3, 9, n)
        is_noise = rng.random((n, slots)) < self.cfg.title_noise_word_fraction
        cum = np.cumsum(theta.astype(np.float64), axis=1)
        r = rng.random((n, slots, 1)) * cum[:, None, -1:]
        topic = np.minimum((r > cum[:, None, :]).sum(axis=2), K - 1)
        # u ** 1.5 skews picks toward the first (most frequent) words of a topic.
        pick = rng.random((n, slots)) ** 1.5
        noise_pick = rng.random((n, slots))
        word_zh = np.where(language[:, None] == 2, rng.random((n, slots)) < 0.5, (language == 1)[:, None])
        ids = np.empty((n, slots), dtype=np.int64)
        for lang, mask in (("en", ~word_zh), ("zh", word_zh)):
            topic_word = self.offsets[lang][topic] + (pick * self.lengths[lang][topic]).astype(np.int64)
            pool = self.noise_ids[lang]
            noise_word = pool[(noise_pick * len(pool)).astype(np.int64)]
            ids = np.where(mask, np.where(is_noise, noise_word, topic_word), ids)
        vocab, is_zh = self.vocab, self.is_zh
        titles = []
        for row, k in zip(ids.tolist(), n_words.tolist()):
            chosen = list(dict.fromkeys(row))[:k]          # distinct words, in draw order
            zh = is_zh[chosen]
            if zh.all():
                text = "".join(vocab[i] for i in chosen)    # Chinese is written without spaces
            elif not zh.any():
                text = " ".join(vocab[i] for i in chosen)
            else:
                text = vocab[chosen[0]]
                for j in range(1, len(chosen)):
                    text += ("" if zh[j] and zh[j - 1] else " ") + vocab[chosen[j]]
            titles.append(text[:1].upper() + text[1:])
        return titles
