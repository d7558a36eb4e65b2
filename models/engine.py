"""One accepted click, end to end, without I/O: session step, learn, refresh, recommend.

The Faust agent and the offline replay both call ``Engine.click``; whatever one does with a
click, the other does too. The engine holds the shared model; visitor states live with the
caller (a Faust table, or a dict in the replay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from models.recommender import Recommendation, Recommender, RecommenderConfig
from models.session import (
    Accepted,
    Click,
    Closed,
    Duplicate,
    Output,
    SessionConfig,
    VisitorState,
    step,
    sweep,
)


@dataclass
class ClickResult:
    state: VisitorState
    outputs: list[Output]
    accepted: Accepted | None = None
    recommendation: Recommendation | None = None
    loss: float = 0.0
    closed: list[Closed] = field(default_factory=list)
    owed: bool = False
    """A suggestion is owed for this click (accepted, or the same message redelivered),
    whether or not ``click`` computed it (``recommend=False`` leaves it to the caller, who
    may ask ``Recommender.recommend_many`` for a whole batch at once)."""


class Engine:
    """Sessions + model: ``click`` for each click, ``sweep`` as time passes."""

    def __init__(
        self,
        session: SessionConfig | None = None,
        recommender: RecommenderConfig | None = None,
        k: int = 20,
        learn: bool = True,
    ) -> None:
        self.session_config = session or SessionConfig()
        self.model = Recommender(recommender)
        self.k = k
        self.learning = learn

    def click(
        self,
        state: VisitorState | None,
        click: Click,
        watermark: float,
        clock: float,
        now_wall: float = 0.0,
        recommend: bool = True,
        learn_later: bool = False,
    ) -> ClickResult:
        """Apply a click. ``clock`` drives the index refresh cadence (event time in a replay,
        monotonic wall time in the worker); ``watermark`` is the partition's event-time high.
        ``learn_later``: the caller learns the accepted click itself, with the rest of its
        batch (``learn_many``), before it recommends."""
        new_state, outputs = step(state, click, self.session_config, watermark, now_wall)
        result = ClickResult(new_state, outputs)
        for out in outputs:
            if isinstance(out, Closed):
                result.closed.append(out)
            elif isinstance(out, Duplicate) and out.redelivery and new_state.session is not None:
                # The same message again (a crash before its offset was committed): answer
                # it again, without learning twice; consumers drop the repeated event id.
                result.owed = True
                if recommend:
                    result.recommendation = self.model.recommend(new_state.session.items, self.k)
            elif isinstance(out, Accepted):
                result.accepted = out
                result.owed = True
                if learn_later:
                    continue
                if self.learning:
                    result.loss = self.model.learn(click.item_id, out.context)
                self.model.maybe_refresh(clock)
                if recommend:
                    assert new_state.session is not None
                    result.recommendation = self.model.recommend(new_state.session.items, self.k)
        return result

    def learn_many(self, clicks: Sequence[tuple[str, Sequence[str]]], clock: float) -> None:
        """Learn the accepted clicks of a batch (item, context), in order, in one compiled
        call, then refresh the index if due: what ``click`` does for each, at once."""
        if self.learning and clicks:
            self.model.learn_many(clicks)
        self.model.maybe_refresh(clock)

    def sweep(
        self, state: VisitorState, watermark: float, now_wall: float | None = None
    ) -> tuple[VisitorState | None, list[Closed]]:
        return sweep(state, self.session_config, watermark, now_wall)
