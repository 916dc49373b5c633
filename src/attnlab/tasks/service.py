"""What a task kind offers `attnlab serve`: one route, the JSON body it takes (a pydantic model),
how a body becomes checked items, and one model call over a batch of items from many requests.
The server (`attnlab.deploy.serve`) knows no kind; each kind describes itself here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from attnlab.errors import InputError

MAX_ITEMS = 64  # items one request may hold, unless the server is told otherwise


class Body(BaseModel):
    """A request body: unknown fields are refused (a typo names itself), types are not coerced
    (a number is no text)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Texts(Body):
    texts: list[str]


@dataclass(frozen=True)
class Service:
    """One endpoint of a served run.

    `items(body)` checks a parsed body and returns its items (an InputError names the item, e.g.
    `texts[2]`); `run(items)` answers a batch of items, drawn from many requests, in one model
    call; `reply(body, answers)` is the JSON answer to one request; `examples(test)` makes request
    bodies from a run's saved test split (the load test sends real examples)."""

    route: str
    request: type[Body]
    items: Callable[[Any], list]
    run: Callable[[list], list]
    reply: Callable[[Any, list], dict]
    examples: Callable[[Any], list[dict]]
    limits: dict[str, Any] = field(default_factory=dict)  # per item: tokens, frames, k, …
    counted: str = ""  # the body's list of items, held to the per-request limit ("": one item)


def too_long(where: str, length: int, most: int, unit: str) -> InputError:
    """'texts[2]: 80 tokens; the model reads at most 32' (the server never cuts an input)."""
    return InputError(f"{where}: {length} {unit}; the model reads at most {most}, so shorten it "
                      "(nothing is cut silently)")


def texts_within(tokenizer, most: int) -> Callable[[Texts], list[str]]:
    """`items` for a body of texts: each refused when the tokenizer makes more tokens of it than
    the model reads."""
    def items(body: Texts) -> list[str]:
        for i, encoded in enumerate(tokenizer.encode_batch(body.texts)):
            if len(encoded.ids) > most:
                raise too_long(f"texts[{i}]", len(encoded.ids), most, "tokens")
        return body.texts

    return items


def classified(probabilities, names: tuple[str, ...]) -> list[dict]:
    """One answer per row of class probabilities (N, classes): the best label, its probability,
    and every class's."""
    answers = []
    for row in probabilities.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        answers.append({"label": names[best], "probability": row[best],
                        "probabilities": dict(zip(names, row, strict=True))})
    return answers


def listed(name: str) -> Callable[[Any, list], dict]:
    """The reply of a body holding a list of items: `{name: [answer, ...]}` in their order."""
    return lambda body, answers: {name: answers}
