"""Item vectors learned online from sessions (item2vec / prod2vec with SGNS).

``ItemVectors`` owns the growing vocabulary and the two vector tables; ``learn`` trains one
click against the items before it in its session. The vocabulary grows in place (capacity
doubles), so a never-seen item can be learned and served at once without a restart.

One pass over a stream sees each transition once, which leaves rare transitions
under-trained compared with an offline model run for many epochs. A bounded replay buffer of
recent pairs gives every click a few extra SGD steps on pairs seen shortly before, in the
same batched step, so the learner stays online and one-pass over the stream while each pair
gets several (decaying-in-time) looks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.sgns import FloatArray, IntArray, sgns_step


@dataclass(frozen=True)
class Item2VecConfig:
    """Learning settings (constructor arguments are the settings)."""

    dim: int = 64
    window: int = 5
    negatives: int = 5
    learning_rate: float = 0.05
    min_learning_rate: float = 0.05
    """The rate decays per item as 1/sqrt(count) towards this floor. Equal to the rate by
    default: measured, a decaying rate leaves a one-pass learner under-trained."""
    power: float = 0.75
    """Negatives are drawn from counts**power (word2vec's smoothed unigram)."""
    distance_power: float = 0.0
    """A pair ``d`` clicks apart trains with rate * d**-distance_power (0: all pairs alike)."""
    learn_repeats: bool = True
    """Also train (a -> a) pairs when an item is clicked again in its session, so each item
    learns its own re-click propensity."""
    replay_pairs: int = 20
    """Extra pairs replayed from the buffer with each click (0: no replay)."""
    replay_buffer: int = 20_000
    """How many recent pairs the replay buffer keeps."""
    seed: int = 0


class Vocabulary:
    """Item id <-> row, with click counts; rows are never reused."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.counts = np.zeros(1024, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, item_id: str) -> int | None:
        return self.index.get(item_id)

    def add(self, item_id: str) -> tuple[int, bool]:
        """Row of ``item_id``, adding it if new; returns (row, was_new)."""
        row = self.index.get(item_id)
        if row is not None:
            return row, False
        row = len(self.ids)
        self.index[item_id] = row
        self.ids.append(item_id)
        if row >= len(self.counts):
            grown = np.zeros(len(self.counts) * 2, dtype=np.float64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        return row, True


class UnigramSampler:
    """Draws negatives from counts**power over the counts seen so far.

    The cumulative table is rebuilt when the counts have moved enough since the last build
    (every ``max(rebuild_min, n_items / 8)`` observations), which keeps the cost per click
    constant amortised while the distribution tracks the stream; items seen since the last
    build are drawable from the next one on.
    """

    def __init__(self, power: float = 0.75, rebuild_min: int = 256) -> None:
        self.power = power
        self.rebuild_min = rebuild_min
        self._cum: npt.NDArray[np.float64] = np.zeros(0)
        self._since = 0
        self._n_at_build = 0

    def observe(self, counts: npt.NDArray[np.float64], n_items: int, n: int = 1) -> None:
        self._since += n
        if self._since >= max(self.rebuild_min, n_items // 8) or self._n_at_build == 0:
            self.rebuild(counts, n_items)

    def rebuild(self, counts: npt.NDArray[np.float64], n_items: int) -> None:
        self._cum = np.cumsum(counts[:n_items] ** self.power)
        self._since = 0
        self._n_at_build = n_items

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> IntArray:
        if self._n_at_build == 0 or self._cum[-1] <= 0:
            return np.zeros(shape, dtype=np.int64)
        u = rng.random(shape) * self._cum[-1]
        out: IntArray = np.searchsorted(self._cum, u, side="right").astype(np.int64)
        np.minimum(out, self._n_at_build - 1, out=out)
        return out


class ReplayBuffer:
    """The last ``size`` (input, target, rate scale) pairs, in a ring."""

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.inputs = np.zeros(self.size, dtype=np.int64)
        self.targets = np.zeros(self.size, dtype=np.int64)
        self.scales = np.zeros(self.size, dtype=np.float32)
        self.n = 0
        self._pos = 0

    def push(self, inputs: IntArray, targets: IntArray, scales: FloatArray) -> None:
        for lo in range(0, len(inputs), self.size):
            i, t, s = inputs[lo : lo + self.size], targets[lo : lo + self.size], scales[lo : lo + self.size]
            idx = (self._pos + np.arange(len(i))) % self.size
            self.inputs[idx], self.targets[idx], self.scales[idx] = i, t, s
            self._pos = int((self._pos + len(i)) % self.size)
            self.n = min(self.n + len(i), self.size)

    def sample(self, rng: np.random.Generator, m: int) -> tuple[IntArray, IntArray, FloatArray]:
        pick = rng.integers(0, self.n, size=m)
        return self.inputs[pick], self.targets[pick], self.scales[pick]


class ItemVectors:
    """The online item2vec model: vocabulary, input and output tables, and the learner."""

    def __init__(self, config: Item2VecConfig | None = None) -> None:
        self.config = config or Item2VecConfig()
        self.vocab = Vocabulary()
        self.rng = np.random.default_rng(self.config.seed)
        self.sampler = UnigramSampler(self.config.power)
        self.replay = ReplayBuffer(self.config.replay_buffer)
        cap = 1024
        self.w_in: FloatArray = np.zeros((cap, self.config.dim), dtype=np.float32)
        self.w_out: FloatArray = np.zeros((cap, self.config.dim), dtype=np.float32)
        self.updates = 0
        """SGD pair updates applied so far."""
        self.version = 0
        """Bumped on every change to the tables (the model version published with suggestions)."""
        self.loss_ema = 0.0
        self._dirty: set[int] = set()

    def __len__(self) -> int:
        return len(self.vocab)

    def _grow(self, need: int) -> None:
        cap = self.w_in.shape[0]
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        for name in ("w_in", "w_out"):
            old = getattr(self, name)
            new = np.zeros((cap, self.config.dim), dtype=np.float32)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def upsert(self, item_id: str) -> int:
        """Row of ``item_id``; a new item gets a small random input vector and a zero output vector."""
        row, new = self.vocab.add(item_id)
        if new:
            self._grow(row + 1)
            d = self.config.dim
            self.w_in[row] = (self.rng.random(d, dtype=np.float32) - 0.5) / d
            self._dirty.add(row)
        return row

    def row(self, item_id: str) -> int | None:
        return self.vocab.get(item_id)

    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> float:
        """Train the click on ``item_id`` against the items before it (last ``window`` of them).

        Each (earlier -> this) pair gets one SGD step with its own negatives, together with
        ``replay_pairs`` pairs replayed from the buffer. Returns the summed loss of the step's
        pairs before it (0.0 when there was nothing to learn from).
        """
        cfg = self.config
        target = self.upsert(item_id)
        self.vocab.counts[target] += 1.0
        self._dirty.add(target)  # its count moved (the index keys carry it)
        self.sampler.observe(self.vocab.counts, len(self.vocab))
        recent = context[-cfg.window :]
        n_ctx = len(recent)
        window = [(c, n_ctx - j) for j, c in enumerate(recent) if cfg.learn_repeats or c != item_id]
        if not window:
            return 0.0
        inputs = np.fromiter((self.upsert(c) for c, _ in window), dtype=np.int64, count=len(window))
        p = len(inputs)
        targets = np.full(p, target, dtype=np.int64)
        if cfg.distance_power:
            dist = np.fromiter((d for _, d in window), dtype=np.float32, count=p)
            scales = dist ** np.float32(-cfg.distance_power)
        else:
            scales = np.ones(p, dtype=np.float32)
        fresh = (inputs, targets, scales)
        if cfg.replay_pairs and self.replay.n:
            r_in, r_tg, r_sc = self.replay.sample(self.rng, cfg.replay_pairs)
            inputs = np.concatenate([inputs, r_in])
            targets = np.concatenate([targets, r_tg])
            scales = np.concatenate([scales, r_sc])
        self.replay.push(*fresh) if cfg.replay_pairs else None
        n_pairs = len(inputs)
        negatives = self.sampler.draw(self.rng, (n_pairs, cfg.negatives))
        clash = negatives == targets[:, None]
        if clash.any():
            negatives[clash] = self.sampler.draw(self.rng, (int(clash.sum()),))
        counts = self.vocab.counts[inputs]
        lr = np.maximum(cfg.min_learning_rate, cfg.learning_rate / np.sqrt(np.maximum(counts, 1.0)))
        lr = (lr * scales).astype(np.float32)
        loss = sgns_step(self.w_in, self.w_out, inputs, targets, negatives, lr)
        self.updates += n_pairs
        self.version += 1
        self._dirty.update(inputs.tolist())
        self._dirty.update(targets.tolist())
        self._dirty.update(negatives.reshape(-1).tolist())
        pair_loss = loss / n_pairs
        self.loss_ema = pair_loss if self.updates == n_pairs else 0.99 * self.loss_ema + 0.01 * pair_loss
        return loss

    def take_dirty(self) -> list[int]:
        """Rows changed since the last call (the index refresh reads this), sorted."""
        rows = sorted(self._dirty)
        self._dirty.clear()
        return rows

    def item_ids(self, rows: npt.NDArray[np.int64] | list[int]) -> list[str]:
        return [self.vocab.ids[int(r)] for r in rows]
